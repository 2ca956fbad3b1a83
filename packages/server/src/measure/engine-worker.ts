import { parentPort } from 'node:worker_threads';

/**
 * The measure engine's thread (engine.ts): fqm-execution runs here, one calculation at a time, so that logic a
 * client stored in a Library cannot stall the server's event loop or take its memory. Answers are JSON text:
 * cql-execution values are class instances that a structured clone would refuse or strip anyway.
 */
const { Calculator } = await import('fqm-execution');
const methods = {
  calculate: Calculator.calculate,
  calculateDataRequirements: Calculator.calculateDataRequirements,
  calculateGapsInCare: Calculator.calculateGapsInCare,
} as Record<string, (...args: unknown[]) => Promise<unknown>>;

parentPort?.on('message', async (job: { id: number; method: string; args: unknown[] }) => {
  try {
    const run = methods[job.method];
    if (!run) throw new Error(`no engine method ${job.method}`);
    parentPort?.postMessage({ id: job.id, json: JSON.stringify(await run(...job.args)) });
  } catch (err) {
    const e = err as Error | undefined;
    parentPort?.postMessage({
      id: job.id,
      error: { message: String(e?.message ?? err), name: e?.constructor?.name ?? 'Error' },
    });
  }
});
parentPort?.postMessage({ ready: true });
