import { existsSync } from 'node:fs';
import {
  isRole,
  newToken,
  TOKEN_FILE_BYTES_MAX,
  TOKEN_NAME_PATTERN,
  TOKENS_MAX,
  TokenTable,
} from '../http/auth.ts';
import { readBoundedFile } from './bounded-file.ts';
import { ConfigError } from './errors.ts';
import { writeSecretFile } from './secret-file.ts';

/** The first line of a token file made by `aspen-node tokens add`. */
const TOKEN_FILE_HEADER =
  '# Aspen bearer tokens: NAME ROLE sha256:<hash>. Only hashes are stored; add with: aspen-node tokens add NAME ROLE --auth-tokens FILE\n';

/** Read and parse a token file; any problem is a ConfigError naming the file (never a token). */
export function loadTokenFile(path: string): TokenTable {
  return parseTokenFile(path, readBoundedFile(path, '--auth-tokens', TOKEN_FILE_BYTES_MAX));
}

/** Parse the text of the token file at `path`; a malformed file is a ConfigError naming it. */
function parseTokenFile(path: string, text: string): TokenTable {
  try {
    return TokenTable.parse(text);
  } catch (error) {
    throw new ConfigError(`--auth-tokens ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * The tokens of a running node: read at start (a bad file stops the start), read again on
 * `reload()` (SIGHUP); a reload that fails keeps the tokens in force and says why.
 */
export class AuthTokens {
  private readonly path: string;
  private table: TokenTable;

  constructor(path: string) {
    this.path = path;
    this.table = loadTokenFile(path);
  }

  get current(): TokenTable {
    return this.table;
  }

  reload():
    { readonly ok: true; readonly tokens: number } | { readonly ok: false; readonly message: string } {
    try {
      this.table = loadTokenFile(this.path);
      return { ok: true, tokens: this.table.size };
    } catch (error) {
      return { ok: false, message: error instanceof Error ? error.message : String(error) };
    }
  }
}

/**
 * `aspen-node tokens add NAME ROLE --auth-tokens FILE`: append a new token's hash to FILE (made,
 * readable by its owner only, when missing) and answer the token, which is shown once and stored
 * nowhere.
 */
export function addToken(path: string, name: string, role: string): string {
  if (!TOKEN_NAME_PATTERN.test(name))
    throw new ConfigError(
      `a token name is 1-64 letters, digits, ".", "_" or "-", got "${name.slice(0, 64)}"`,
    );
  if (!isRole(role)) throw new ConfigError(`a role is read, write or admin, got "${role.slice(0, 16)}"`);
  const exists = existsSync(path);
  const text = exists ? readBoundedFile(path, '--auth-tokens', TOKEN_FILE_BYTES_MAX) : TOKEN_FILE_HEADER;
  const table = parseTokenFile(path, text);
  if (table.hasName(name)) throw new ConfigError(`--auth-tokens ${path} already has a token named ${name}`);
  if (table.size >= TOKENS_MAX)
    throw new ConfigError(`--auth-tokens ${path} holds ${TOKENS_MAX} tokens already`);
  const { token, line } = newToken(name, role);
  const separator = text.length === 0 || text.endsWith('\n') ? '' : '\n';
  writeSecretFile(path, `${text}${separator}${line}\n`);
  return token;
}
