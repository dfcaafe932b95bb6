// @ts-check
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

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
        { regex: '^(?!\\.\\.?/)', message: 'src/raft imports only its own modules.' },
        { regex: '^\\.\\./\\.\\.', message: 'src/raft imports only its own modules.' },
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
  { files: ['src/raft/**/*.ts'], rules: pureCoreRules },
  { files: ['eslint.config.js'], ...tseslint.configs.disableTypeChecked },
);
