import { Packr } from 'msgpackr';
import type { WriteCommand } from '../api/types.ts';
import { assert } from '../base/assert.ts';

/** Commands travel in the log as msgpack (no JSON on the Raft path). */
const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeCommand(command: WriteCommand): Uint8Array {
  return packr.pack(command);
}

export function decodeCommand(data: Uint8Array): WriteCommand {
  const command: unknown = packr.unpack(data);
  assert(typeof command === 'object' && command !== null, 'a log command decodes to an object');
  return command as WriteCommand;
}
