import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Linter } from 'eslint';
import { describe, expect, it } from 'vitest';
import { LAYERS, layersRule } from '../eslint.config.js';

const ROOT = resolve(import.meta.dirname, '..');

function lint(file: string, code: string): string[] {
  const linter = new Linter({ configType: 'flat' });
  const messages = linter.verify(
    code,
    [
      {
        files: ['**/*.ts'],
        plugins: { aspen: { rules: { layers: layersRule } } },
        rules: { 'aspen/layers': 'error' },
      },
    ],
    { filename: resolve(ROOT, file) },
  );
  return messages.map((message) => message.message);
}

describe('the layer map', () => {
  it('rejects an import the map forbids, at any depth of a folder', () => {
    expect(lint('src/raft/core.ts', "import { RaftNode } from '../node/raft-node.ts';")).toEqual([
      "layer map: src/raft may import base, not src/node ('../node/raft-node.ts'); see docs/architecture.md",
    ]);
    expect(lint('src/http/server.ts', "export * from '../node/raft-node.ts';")).toHaveLength(1);
    expect(lint('src/cluster/discovery/gossip.ts', "import '../../sim/simulation.ts';")).toHaveLength(1);
    expect(lint('src/base/assert.ts', "const m = import('../api/errors.ts');")).toHaveLength(1);
    expect(lint('src/node/codec.ts', "import '../../test/raft/cluster.ts';")).toEqual([
      "src/node imports '../../test/raft/cluster.ts', outside src/",
    ]);
  });

  it('accepts what the map allows, imports inside a layer, and packages', () => {
    expect(lint('src/node/raft-node.ts', "import { RaftCore } from '../raft/core.ts';")).toEqual([]);
    expect(lint('src/cluster/discovery/gossip.ts', "import { x } from '../bootstrap.ts';")).toEqual([]);
    expect(lint('src/raft/core.ts', "import { assert } from '../base/assert.ts';")).toEqual([]);
    expect(lint('src/http/server.ts', "import Fastify from 'fastify';")).toEqual([]);
    expect(lint('test/raft/cluster.ts', "import '../../src/node/raft-node.ts';")).toEqual([]);
  });

  it('is drawn in docs/architecture.md exactly as eslint enforces it', () => {
    const doc = readFileSync(resolve(ROOT, 'docs/architecture.md'), 'utf8');
    const table = /<!-- layers:begin -->\n([\s\S]*?)<!-- layers:end -->/.exec(doc)?.[1] ?? '';
    const rows = table
      .split('\n')
      .slice(2)
      .filter((line) => line.startsWith('|'))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    const documented = Object.fromEntries(
      rows.map(([, layer = '', imports = '']) => [layer, imports === '—' ? [] : imports.split(', ')]),
    );
    expect(documented).toEqual(LAYERS);
  });
});
