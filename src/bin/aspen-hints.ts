/**
 * What a CLI user reads in an error: the HTTP API's messages name routes for HTTP clients
 * ("POST /init first"); the CLI names its own commands instead, and adds a next step for a few
 * codes. The server's messages stay as they are (docs/api.md).
 */

interface RouteHint {
  /** The route-naming words of a server message. */
  readonly route: RegExp;
  /** The CLI's words instead; `id` is the node the message names (or "ID"). */
  readonly cli: (id: string) => string;
}

/** Each route hint the server gives (src/node/errors.ts, src/node/control-client.ts), as a CLI command. */
const ROUTE_HINTS: readonly RouteHint[] = [
  {
    route: /POST \/init first/,
    cli: () =>
      'initialize it first: aspen init 1=HOST:RAFT_PORT 2=HOST:RAFT_PORT 3=HOST:RAFT_PORT (with discovery: aspen init 1 2 3)',
  },
  {
    route: /POST \/remove-learner \{"learner_id":\d+\} or `aspen member remove \d+`/,
    cli: (id) => `\`aspen member remove ${id}\``,
  },
  { route: /POST \/remove-learner/, cli: (id) => `\`aspen member remove ${id}\`` },
  {
    route: /\/change-membership with it under "learners"/,
    cli: (id) => `\`aspen change-membership OTHER_VOTERS… --learners ${id}\``,
  },
  { route: /\/add-learner/, cli: (id) => `\`aspen add-learner ${id}\`` },
];

/** A next step for codes whose message alone leaves the CLI user stuck. */
const CODE_HINTS: Readonly<Record<string, string>> = {
  NO_LEADER: '`aspen health` shows what each node sees',
  NO_QUORUM: '`aspen health` shows which nodes answer',
  CONNECTION: 'is the cluster running? --endpoints (or ASPEN_ENDPOINTS) says where its nodes listen',
};

/** The node id a message is about: `learner 5 …`, `node 5 …`, `{"learner_id":5}`. */
function nodeIdIn(message: string): string {
  return /\b(?:learner|node) (\d+)\b/.exec(message)?.[1] ?? /"learner_id":(\d+)/.exec(message)?.[1] ?? 'ID';
}

/** `message` of an error with `code`, as the CLI shows it. */
export function cliMessage(code: string, message: string): string {
  const id = nodeIdIn(message);
  let text = message;
  for (const hint of ROUTE_HINTS) text = text.replace(hint.route, hint.cli(id));
  const next = CODE_HINTS[code];
  return next === undefined ? text : `${text} (${next})`;
}
