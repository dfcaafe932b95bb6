// Types of what test/layers.test.ts imports from eslint.config.js (a plain JS file ESLint loads itself).
import type { Linter, Rule } from 'eslint';

export declare const LAYERS: Readonly<Record<string, readonly string[]>>;
export declare const layersRule: Rule.RuleModule;
declare const config: Linter.Config[];
export default config;
