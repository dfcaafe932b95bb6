// @ts-check
import { dirname, relative, resolve, sep } from 'node:path';
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The layer map, written once: each folder of src/ and the folders it may import (index is
 * src/index.ts, the package's public entry). Arrows point down only: http → api ← node → raft;
 * node reaches storage and network only through its ports (src/node/interfaces.ts), which they
 * implement; the simulator swaps in its own network and disk; cluster composes a node; bin and
 * index sit on top. docs/architecture.md draws it; the `aspen/layers` rule below enforces it.
 * @type {Readonly<Record<string, readonly string[]>>}
 */
export const LAYERS = {
  base: [],
  raft: ['base'],
  api: ['base'],
  node: ['base', 'raft', 'api'],
  storage: ['base', 'raft', 'api', 'node'],
  network: ['base', 'raft', 'api', 'node'],
  http: ['base', 'api'],
  client: ['base', 'api'],
  sim: ['base', 'raft', 'api', 'node', 'storage'],
  cluster: ['base', 'raft', 'api', 'node', 'storage', 'network', 'http'],
  bench: ['base', 'api', 'client'],
  bin: ['base', 'api', 'client', 'cluster'],
  index: ['base', 'api', 'client', 'cluster'],
};

const SRC = resolve(import.meta.dirname, 'src');

/** The layer of a path under src/ ('index' for src/index.ts), or null outside src/. */
function layerOf(/** @type {string} */ path) {
  const inSrc = relative(SRC, path);
  if (inSrc.startsWith('..') || inSrc === '') return null;
  const [first] = inSrc.split(sep);
  return first === 'index.ts' ? 'index' : (first ?? null);
}

/** @type {import('eslint').Rule.RuleModule} */
export const layersRule = {
  meta: { type: 'problem', schema: [], docs: { description: 'imports follow the layer map (LAYERS)' } },
  create(context) {
    const from = layerOf(context.filename);
    if (from === null) return {};
    const allowed = LAYERS[from];
    /** @param {import('estree').Node & { source?: import('estree').Node | null }} node */
    const check = (node) => {
      const source = node.source;
      if (source?.type !== 'Literal' || typeof source.value !== 'string') return;
      const spec = source.value;
      if (!spec.startsWith('.')) return;
      const to = layerOf(resolve(dirname(context.filename), spec));
      if (to === from) return;
      if (allowed === undefined) {
        context.report({ node, message: `src/${from} is not in the layer map (eslint.config.js LAYERS)` });
      } else if (to === null) {
        context.report({ node, message: `src/${from} imports '${spec}', outside src/` });
      } else if (!allowed.includes(to)) {
        const may = allowed.length === 0 ? 'nothing' : allowed.join(', ');
        context.report({
          node,
          message: `layer map: src/${from} may import ${may}, not src/${to} ('${spec}'); see docs/architecture.md`,
        });
      }
    };
    return {
      ImportDeclaration: check,
      ExportNamedDeclaration: check,
      ExportAllDeclaration: check,
      ImportExpression: check,
    };
  },
};

/** The Raft core is pure: no clock, no timers, no global randomness, no async, no Node imports. */
const pureCoreRules = {
  'no-restricted-globals': [
    'error',
    ...[
      'Date',
      'setTimeout',
      'setInterval',
      'setImmediate',
      'clearTimeout',
      'clearInterval',
      'clearImmediate',
      'queueMicrotask',
      'performance',
      'process',
      'Buffer',
      'require',
      'fetch',
      'Promise',
    ].map((name) => ({ name, message: 'src/raft is a pure state machine: inject it instead.' })),
  ],
  'no-restricted-properties': [
    'error',
    { object: 'Math', property: 'random', message: 'Use the injected seeded PRNG.' },
  ],
  'no-restricted-syntax': [
    'error',
    { selector: ':function[async=true]', message: 'src/raft has no async code.' },
    { selector: 'AwaitExpression', message: 'src/raft has no async code.' },
    { selector: 'NewExpression[callee.name="Date"]', message: 'src/raft has no clock.' },
  ],
  'no-restricted-imports': [
    'error',
    {
      patterns: [
        { regex: '^node:', message: 'src/raft imports no Node modules.' },
        { regex: '^(?!\\.\\.?/)', message: 'src/raft imports only its own modules and src/base.' },
        { regex: '^\\.\\./\\.\\.', message: 'src/raft imports only its own modules and src/base.' },
      ],
    },
  ],
};

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', 'data/'] },
  eslint.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      '@typescript-eslint/no-unnecessary-condition': ['error', { allowConstantLoopConditions: true }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['src/**/*.ts'],
    plugins: { aspen: { rules: { layers: layersRule } } },
    rules: { 'aspen/layers': 'error' },
  },
  { files: ['src/raft/**/*.ts'], rules: pureCoreRules },
  { files: ['eslint.config.js'], ...tseslint.configs.disableTypeChecked },
);
