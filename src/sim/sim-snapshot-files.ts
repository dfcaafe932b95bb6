import { assert } from '../base/assert.ts';
import type { SnapshotFileSource } from '../node/interfaces.ts';
import type { StateMachine } from '../node/kv-state-machine.ts';
import { filesForgottenByMark } from '../storage/snapshot-retention.ts';
import type { SeededPrng } from '../raft/prng.ts';
import type { SimDisk } from './disk.ts';
import type { EventQueue } from './event-queue.ts';

/** Bytes of a snapshot being received (a chunk's totalBytes comes off the network). */
export const SIM_RECEIVE_BYTES_MAX = 64 * 1024 * 1024;

/** How a seed keeps its snapshots (settings.ts draws it; every node of a seed the same way). */
export interface SnapshotFileSettings {
  /** Snapshots as files (SimSnapshotFiles, the LMDB path); false: snapshot bytes (the memory path). */
  readonly files: boolean;
  /** A copy, a received file's sync and an install each take 1..this many ms. */
  readonly fileLatencyMsMax: number;
  /** Chance that a node crashes while an install it just started is copying (before the switch). */
  readonly installCrashProbability: number;
}

export interface SimSnapshotFilesOptions {
  readonly events: EventQueue;
  /** The node's own stream: latencies (and the install crash draws of the cluster). */
  readonly prng: SeededPrng;
  readonly settings: SnapshotFileSettings;
  /** The node's disk: an install reads the configuration of the snapshot its log marks. */
  readonly disk: SimDisk;
  /** An install started and will switch the machine in `switchInMs`: the cluster may crash the node before. */
  readonly installing: (switchInMs: number) => void;
  /** A line for the run's trace. */
  readonly note: (text: string) => void;
}

/**
 * A promise-like completion settled inside a simulator event: its continuations run at once, in
 * that event (deterministic; an assertion in one fails the seed rather than becoming an unhandled
 * rejection). The node only calls `then(onFulfilled, onRejected)` on what the port returns.
 */
class SimCompletion<T> {
  private outcome: { ok: true; value: T } | { ok: false; error: unknown } | null = null;
  private readonly waiting: { ok: (value: T) => unknown; failed: (error: unknown) => unknown }[] = [];

  then(onFulfilled: (value: T) => unknown, onRejected?: (error: unknown) => unknown): void {
    const failed =
      onRejected ??
      ((error: unknown) => {
        throw error;
      });
    if (this.outcome === null) this.waiting.push({ ok: onFulfilled, failed });
    else if (this.outcome.ok) onFulfilled(this.outcome.value);
    else failed(this.outcome.error);
  }

  settle(outcome: { ok: true; value: T } | { ok: false; error: unknown }): void {
    assert(this.outcome === null, 'a completion settles once');
    this.outcome = outcome;
    for (const waiter of this.waiting.splice(0)) {
      if (outcome.ok) waiter.ok(outcome.value);
      else waiter.failed(outcome.error);
    }
  }

  /** The port's type: the node awaits nothing else on it (see the class comment). */
  asPromise(): Promise<T> {
    return this as unknown as Promise<T>;
  }
}

/**
 * One node's snapshot files, simulated with the crash semantics of SimDisk and of the real store
 * (src/storage/snapshot-files.ts, LmdbStorage.snapshotFileSource): a file is durable only once its
 * copy or sync completed after a seeded latency; a crash makes every pending completion never
 * happen (its generation is gone) and loses the file being received, while durable files stay. A
 * take encodes the machine as it is when called (the read transaction's consistent view) while the
 * node goes on applying; an install switches the machine only at the end of its copy, so a crash
 * before leaves the old state and the next start restores the file the log marks.
 */
export class SimSnapshotFiles implements SnapshotFileSource {
  /** Durable files by index: what survives a crash. */
  private readonly files = new Map<number, Uint8Array>();
  private readonly options: SimSnapshotFilesOptions;
  private generation = 0;
  private machine: StateMachine | null = null;
  private taking = false;
  private receiving: { index: number; bytes: Uint8Array } | null = null;
  /** An install whose switch has not happened yet (a crash now hits it). */
  private installPending = false;

  constructor(options: SimSnapshotFilesOptions) {
    this.options = options;
  }

  /** The machine of the node now running on these files. */
  attach(machine: StateMachine): void {
    this.machine = machine;
  }

  /** The bytes of durable file `index`, or undefined when there is none. */
  durable(index: number): Uint8Array | undefined {
    return this.files.get(index);
  }

  /** Power loss: pending copies, syncs and installs never complete; the file being received is gone. */
  crash(): { installHit: boolean } {
    const installHit = this.installPending;
    this.generation += 1;
    this.machine = null;
    this.taking = false;
    this.receiving = null;
    this.installPending = false;
    return { installHit };
  }

  /** At open, as WalLogStore.load: every file but the one the log marks (`keep`) goes. */
  prune(keep: number | null): void {
    this.remove(
      [...this.files.keys()].filter((index) => index !== keep),
      keep,
    );
  }

  /** The mark of `marked` is durable: the files the store's rule lets go are deleted. */
  forgetBefore(marked: number): void {
    this.remove(filesForgottenByMark([...this.files.keys()], marked), marked);
  }

  private remove(indexes: readonly number[], marked: number | null): void {
    for (const index of indexes) this.files.delete(index);
    if (indexes.length > 0)
      this.options.note(`files: ${indexes.join(',')} deleted (${marked ?? 'none'} marked)`);
  }

  take(): Promise<number> {
    assert(!this.taking, 'one snapshot copy at a time');
    const machine = this.attached();
    this.taking = true;
    const index = machine.appliedIndex;
    const bytes = machine.snapshot();
    return this.later((completion: SimCompletion<number>) => {
      this.taking = false;
      if (index > 0) this.files.set(index, bytes);
      this.options.note(`files: copy ${index} synced`);
      completion.settle({ ok: true, value: index });
    });
  }

  size(index: number): number {
    return this.file(index).byteLength;
  }

  read(index: number, offset: number, length: number): Uint8Array {
    const file = this.file(index);
    assert(offset >= 0 && length >= 0 && offset <= file.byteLength, `read of file ${index} in range`);
    return file.slice(offset, offset + length);
  }

  beginReceive(index: number, totalBytes: number): void {
    assert(totalBytes >= 0 && totalBytes <= SIM_RECEIVE_BYTES_MAX, `received file of ${totalBytes} bytes`);
    this.receiving = { index, bytes: new Uint8Array(totalBytes) };
  }

  writeReceived(offset: number, data: Uint8Array): void {
    const receiving = this.receiving;
    assert(receiving !== null, 'a snapshot is being received');
    assert(offset + data.byteLength <= receiving.bytes.byteLength, 'a received piece within the file');
    receiving.bytes.set(data, offset);
  }

  finishReceive(index: number): Promise<void> {
    const receiving = this.receiving;
    assert(receiving !== null, 'a snapshot is being received');
    return this.later((completion: SimCompletion<undefined>) => {
      if (this.receiving !== receiving) {
        completion.settle({
          ok: false,
          error: new Error('a newer snapshot replaced the one being received'),
        });
        return;
      }
      this.receiving = null;
      this.files.set(index, receiving.bytes);
      this.options.note(`files: received ${index} synced`);
      completion.settle({ ok: true, value: undefined });
    });
  }

  /** The copy takes a seeded latency; the switch happens at its end, only if no crash came first. */
  install(index: number): Promise<void> {
    const marked = this.options.disk.load().snapshot;
    assert(
      marked !== null && marked.data === null && marked.meta.index === index,
      `install file ${index}: the durable log must mark it (it marks ${marked?.meta.index ?? 'none'})`,
    );
    const bytes = this.file(index);
    const machine = this.attached();
    this.installPending = true;
    const completion = new SimCompletion<undefined>();
    const generation = this.generation;
    const latencyMs = this.latencyMs();
    this.options.events.after(latencyMs, () => {
      if (generation !== this.generation) return; // crashed during the copy: the old state stays
      this.installPending = false;
      machine.restore(bytes, index, marked.meta.config);
      this.options.note(`files: ${index} installed`);
      completion.settle({ ok: true, value: undefined });
    });
    this.options.installing(latencyMs);
    return completion.asPromise();
  }

  /** A completion settled by `finish` after a seeded latency, unless the node crashed meanwhile. */
  private later<T>(finish: (completion: SimCompletion<T>) => void): Promise<T> {
    const completion = new SimCompletion<T>();
    const generation = this.generation;
    this.options.events.after(this.latencyMs(), () => {
      if (generation === this.generation) finish(completion);
    });
    return completion.asPromise();
  }

  private latencyMs(): number {
    return this.options.prng.nextIntInclusive(1, this.options.settings.fileLatencyMsMax);
  }

  private file(index: number): Uint8Array {
    const file = this.files.get(index);
    assert(file !== undefined, `snapshot file ${index} exists (files: ${[...this.files.keys()].join(',')})`);
    return file;
  }

  private attached(): StateMachine {
    assert(this.machine !== null, 'a running node uses the snapshot files');
    return this.machine;
  }
}
