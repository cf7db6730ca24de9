// posthog-node, as a Node service would use it, sending to the gateway given on the
// command line: `node posthog_node_send.mjs <host> <api key> <uuid>`. Prints what it sent.
import { PostHog } from 'posthog-node';

const [host, apiKey, orderId] = process.argv.slice(2);
const client = new PostHog(apiKey, { host, flushAt: 20, flushInterval: 10000 });
const failures = [];
client.on('error', (error) => failures.push(String(error)));

client.capture({
  distinctId: 'u_node',
  event: 'order_completed',
  properties: { revenue_cents: 4200, items: ['a', 'b'] },
  timestamp: new Date('2026-11-20T09:30:00.123Z'),
  uuid: orderId,
});
client.identify({ distinctId: 'u_node', properties: { $set: { plan: 'team' } } });
client.alias({ distinctId: 'u_node', alias: 'anon_9' });
await client.shutdown(); // flushes the batch: one POST to /batch/

console.log(JSON.stringify({ failures }));
