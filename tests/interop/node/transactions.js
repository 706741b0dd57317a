// kafkajs transactions against a kavka broker: a transactional producer commits two
// transactions and aborts one in between; a read_committed consumer (kafkajs' default,
// readUncommitted: false) sees exactly the committed records, in order per partition, and a
// readUncommitted one sees all; sendOffsets inside a transaction commits the group's offset
// with the commit, and an aborted transaction's offsets never become visible.
// Usage: node transactions.js <host:port> <topic>
// Prints one JSON line with what it checked; exits 1 with the failure on stderr.
'use strict'

const assert = require('node:assert/strict')
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, topic] = process.argv.slice(2)
if (!bootstrap || !topic) {
  console.error('usage: node transactions.js <host:port> <topic>')
  process.exit(2)
}

const PARTITIONS = 2
const inTopic = `${topic}-in`

const kafka = new Kafka({
  clientId: 'kavka-interop-kafkajs-txn',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 2000 },
})

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/** Resolves once `cond()` holds, polling every 50 ms; rejects after `ms` naming `what`. */
async function until (cond, what, ms = 30000) {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (cond()) return
    await sleep(50)
  }
  throw new Error(`${what} not reached within ${ms} ms`)
}

function messages (tag, n) {
  const out = []
  for (let i = 0; i < n; i++) out.push({ partition: i % PARTITIONS, value: `${tag}-${String(i).padStart(2, '0')}` })
  return out
}

/** Every record of `topic` a fresh group member reads (from the beginning) within the wait. */
async function readAll (groupId, readUncommitted, want) {
  const records = []
  const consumer = kafka.consumer({ groupId, readUncommitted, maxWaitTimeInMs: 200, sessionTimeout: 6000, heartbeatInterval: 500 })
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        records.push({ partition, offset: Number(message.offset), value: message.value.toString() })
      },
    })
    await until(() => records.length >= want, `${want} records read (readUncommitted=${readUncommitted}, got ${records.length})`)
    await sleep(1000) // anything more would be a record that must not be there
  } finally {
    await consumer.disconnect()
  }
  return records
}

function byPartition (records) {
  const out = {}
  for (let p = 0; p < PARTITIONS; p++) out[p] = records.filter(r => r.partition === p).sort((a, b) => a.offset - b.offset).map(r => r.value)
  return out
}

async function main () {
  const checked = []
  const admin = kafka.admin()
  await admin.connect()
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }, { topic: inTopic, numPartitions: 1, replicationFactor: 1 }],
    })
  } finally {
    await admin.disconnect()
  }

  const producer = kafka.producer({ transactionalId: `${topic}-js`, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 30000 })
  await producer.connect()
  const committed = []
  const all = []
  try {
    let txn = await producer.transaction()
    const c1 = messages('c1', 10)
    await txn.send({ topic, acks: -1, messages: c1 })
    await txn.commit()
    committed.push(...c1)
    all.push(...c1)

    txn = await producer.transaction()
    const a = messages('aborted', 10)
    await txn.send({ topic, acks: -1, messages: a })
    await txn.abort()
    all.push(...a)

    txn = await producer.transaction()
    const c2 = messages('c2', 6)
    await txn.send({ topic, acks: -1, messages: c2 })
    await txn.commit()
    committed.push(...c2)
    all.push(...c2)
    checked.push('commit, abort, commit')

    const rc = byPartition(await readAll(`g-rc-${topic}`, false, committed.length))
    const want = byPartition(committed.map((m, i) => ({ ...m, offset: i })))
    assert.deepEqual(rc, want, 'read_committed sees exactly the committed records, in order')
    checked.push('read_committed sees only committed')

    const ru = await readAll(`g-ru-${topic}`, true, all.length)
    assert.deepEqual(ru.map(r => r.value).sort(), all.map(m => m.value).sort(), 'readUncommitted sees every record')
    checked.push('readUncommitted sees all')

    // sendOffsets: visible with the commit, never with an abort.
    const groupId = `g-offsets-${topic}`
    txn = await producer.transaction()
    await txn.send({ topic, acks: -1, messages: [{ partition: 0, value: 'with-offsets' }] })
    await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: inTopic, partitions: [{ partition: 0, offset: '20' }] }] })
    await txn.commit()
    txn = await producer.transaction()
    await txn.send({ topic, acks: -1, messages: [{ partition: 0, value: 'aborted-with-offsets' }] })
    await txn.sendOffsets({ consumerGroupId: groupId, topics: [{ topic: inTopic, partitions: [{ partition: 0, offset: '25' }] }] })
    await txn.abort()
    const admin2 = kafka.admin()
    await admin2.connect()
    try {
      const offsets = await admin2.fetchOffsets({ groupId, topics: [inTopic] })
      assert.deepEqual(offsets[0].partitions.map(p => [p.partition, p.offset]), [[0, '20']], 'the committed transaction\'s offset, not the aborted one\'s')
    } finally {
      await admin2.disconnect()
    }
    checked.push('sendOffsets commits with the transaction')
  } finally {
    await producer.disconnect()
  }
  console.log(JSON.stringify({ ok: true, checked }))
}

main().then(
  () => process.exit(0),
  err => {
    console.error(err && err.stack ? err.stack : err)
    process.exit(1)
  }
)
