import fc from 'fast-check';
import { expect } from 'vitest';
import { decodeTicket } from '../../src/cluster/discovery/ticket.ts';
import { TicketError } from '../../src/cluster/errors.ts';

/** Every single-character change of a ticket after its prefix, and every cut, is refused (property). */
export function expectEditsRefused(text: string): void {
  fc.assert(
    fc.property(
      fc.integer({ min: 5, max: text.length - 1 }),
      fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz234567'.split('')),
      (index, letter) => {
        fc.pre(text[index] !== letter);
        expect(() => decodeTicket(text.slice(0, index) + letter + text.slice(index + 1))).toThrow(
          TicketError,
        );
      },
    ),
    { numRuns: 200 },
  );
  fc.assert(
    fc.property(fc.integer({ min: 0, max: text.length - 1 }), (length) => {
      expect(() => decodeTicket(text.slice(0, length))).toThrow(TicketError);
    }),
  );
}
