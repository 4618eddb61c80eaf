// ali-ons 3.12.0 (npm) against an ACL broker: produces N messages signed with the given account
// (accessKeyId / accessKeySecret) and consumes them in a fresh group. With --expect-refusal the
// sends must fail instead. Prints one JSON line; exit 0 when the expectation held.
//   usage: node js_acl.js --namesrv H:P --topic T --ak AK --sk SK [--n 20] [--expect-refusal]
'use strict';
const path = require('path');
const mods = process.env.ALI_ONS_NODE_MODULES;
const { Producer, Consumer, Message } = require(mods ? path.join(mods, 'ali-ons') : 'ali-ons');

const a = { n: 20, timeout: 60 };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].slice(2);
  if (i + 1 < process.argv.length && !process.argv[i + 1].startsWith('--')) a[k] = process.argv[++i]; else a[k] = true;
}
a.n = Number(a.n);
const run = Date.now().toString(36);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const httpclient = { request() { throw new Error('HTTP name-server lookup disabled'); } };
const common = { httpclient, nameSrv: String(a.namesrv), logger: quiet, accessKeyId: String(a.ak), accessKeySecret: String(a.sk) };
const sleep = ms => new Promise(r => setTimeout(r, ms));
const done = (out, ok) => process.stdout.write(JSON.stringify(Object.assign({ client: 'ali-ons', ok }, out)) + '\n', () => process.exit(ok ? 0 : 1));

async function main() {
  const errors = [];
  let sent = 0;
  const producer = new Producer(Object.assign({}, common, { producerGroup: 'PG_acl_js_' + run, instanceName: 'acl-p-' + run, sendMsgTimeout: 3000 }));
  producer.on('error', e => errors.push(String(e.message).split('\n')[0]));
  await producer.ready();
  for (let i = 0; i < a.n; i++) {
    const m = new Message(String(a.topic), 'TagA', 'acl ' + i);
    m.keys = [ `${run}-${i}` ];
    try {
      const r = await producer.send(m);
      if (r.sendStatus === 'SEND_OK') sent++; else errors.push(r.sendStatus);
    } catch (e) {
      errors.push(String(e.message).split('\n')[0]);
      if (a['expect-refusal']) break;
    }
  }
  await producer.close();
  if (a['expect-refusal']) return done({ expect: 'refusal', sent, errors: errors.slice(0, 3) }, sent === 0 && errors.length > 0);

  const got = new Set();
  const consumer = new Consumer(Object.assign({}, common, {
    consumerGroup: 'CG_acl_js_' + run, instanceName: 'acl-c-' + run, consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET' }));
  consumer.on('error', e => { if (!/No topic route info/.test(String(e.message))) errors.push(String(e.message).split('\n')[0]); });
  consumer.subscribe(String(a.topic), '*', async msg => { if (String(msg.keys).startsWith(run)) got.add(msg.keys); });
  await consumer.ready();
  const deadline = Date.now() + Number(a.timeout) * 1000;
  while (Date.now() < deadline && got.size < a.n) await sleep(200);
  await consumer.close();
  done({ sent, received: got.size, errors: errors.slice(0, 3) }, sent === a.n && got.size === a.n);
}
main().catch(e => {
  const why = String(e && e.message);
  // A refusal may surface outside a send (ali-ons raises it from the producer's setup calls).
  done({ errors: [ 'fatal: ' + why ] }, Boolean(a['expect-refusal']) && /AclException/.test(why));
});
