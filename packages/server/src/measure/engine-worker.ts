/**
 * The measure engine's process (engine.ts): fqm-execution runs here, one calculation at a time, so that logic a
 * client stored in a Library can neither stall the server's event loop nor take its memory — running out of heap
 * ends this process only. Answers are JSON text: cql-execution values are class instances that a structured
 * clone would refuse or strip anyway.
 */
const { Calculator } = await import('fqm-execution');
const methods = {
  calculate: Calculator.calculate,
  calculateDataRequirements: Calculator.calculateDataRequirements,
  calculateGapsInCare: Calculator.calculateGapsInCare,
} as Record<string, (...args: unknown[]) => Promise<unknown>>;

process.on('message', async (job: { id: number; method: string; args: unknown[] }) => {
  try {
    const run = methods[job.method];
    if (!run) throw new Error(`no engine method ${job.method}`);
    process.send?.({ id: job.id, json: JSON.stringify(await run(...job.args)) });
  } catch (err) {
    const e = err as Error | undefined;
    process.send?.({
      id: job.id,
      error: { message: String(e?.message ?? err), name: e?.constructor?.name ?? 'Error' },
    });
  }
});
// The server is gone (or let this process go): nothing is left to calculate for.
process.on('disconnect', () => process.exit(0));
