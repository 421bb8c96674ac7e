'use strict';
// The BullMQ peer's worker (scripts/bench_e2e.sh, section bullmq): one Worker on the queue
// `bench` running CONCURRENCY jobs at once, each doing nothing. Prints "ready" once it is
// connected, and on SIGTERM closes and prints "completed N failed F".
// Usage: node worker.js PORT CONCURRENCY
const { Worker } = require('bullmq');

const [port, concurrency] = process.argv.slice(2).map(Number);
const connection = { host: '127.0.0.1', port };

let completed = 0;
let failed = 0;
const worker = new Worker('bench', async () => {}, { connection, concurrency });
worker.on('completed', () => completed++);
worker.on('failed', () => failed++);
worker.on('error', (e) => console.error(e));

process.on('SIGTERM', async () => {
  setTimeout(() => process.exit(1), 5000).unref();
  await worker.close();
  console.log(`completed ${completed} failed ${failed}`);
  process.exit(0);
});

worker.waitUntilReady().then(
  () => console.log('ready'),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
