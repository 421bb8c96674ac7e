'use strict';
// The BullMQ peer's producer (scripts/bench_e2e.sh, section bullmq): ADDERS concurrent adders,
// each with its own Redis connection (as wrk's producers each keep their own keep-alive
// connection), add TOTAL jobs to the queue `bench` in all, then print one line:
//   added A failed F first_add_ms T0 add_ms D cpu_us C
// T0 is the wall clock (ms since the epoch) just before the first add; C the CPU this process
// spent from then until the last add returned (module loading and connecting are left out, as
// wrk's start is).
// Usage: node producer.js PORT TOTAL ADDERS
const { Queue } = require('bullmq');

const [port, total, adders] = process.argv.slice(2).map(Number);
const connection = { host: '127.0.0.1', port };

async function main() {
  const queues = Array.from({ length: adders }, () => new Queue('bench', { connection }));
  await Promise.all(queues.map((q) => q.waitUntilReady()));
  let next = 0;
  let failed = 0;
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  await Promise.all(
    queues.map(async (q) => {
      for (let i = next++; i < total; i = next++) {
        try {
          await q.add('noop', { prompt: 'a red fox', i });
        } catch (e) {
          failed++;
        }
      }
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  console.log(
    `added ${total - failed} failed ${failed} first_add_ms ${t0} add_ms ${Date.now() - t0} ` +
      `cpu_us ${cpu.user + cpu.system}`,
  );
  await Promise.all(queues.map((q) => q.close()));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
