// kafkajs consumer groups against a kavka broker: two consumers in one group share a 6-partition
// topic (disjoint assignments covering every partition, each record read once, by the owner of
// its partition); after both disconnect (committing), a third member of the same group reads
// exactly the records produced since: no gap, no duplicate.
// Usage: node groups.js <host:port> <topic>
// Prints one JSON line with what it checked; exits 1 with the failure on stderr.
'use strict'

const assert = require('node:assert/strict')
const { Kafka, logLevel } = require('kafkajs')

const [bootstrap, topic] = process.argv.slice(2)
if (!bootstrap || !topic) {
  console.error('usage: node groups.js <host:port> <topic>')
  process.exit(2)
}

const PARTITIONS = 6
const PER_PARTITION = 10
const groupId = `g-${topic}`

const kafka = new Kafka({
  clientId: 'kavka-interop-kafkajs-groups',
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

/** A group member that records its latest assignment and every record it reads. */
function member (name, records) {
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout: 6000,
    rebalanceTimeout: 10000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 200,
    retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 2000 },
  })
  const m = { name, consumer, owned: new Set(), joins: 0 }
  consumer.on(consumer.events.GROUP_JOIN, e => {
    m.joins++
    m.owned = new Set(e.payload.memberAssignment[topic] || [])
  })
  m.start = async () => {
    await consumer.connect()
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        records.push({ member: name, partition, offset: Number(message.offset), value: message.value.toString() })
      },
    })
  }
  return m
}

async function produce (round) {
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const messages = []
  for (let p = 0; p < PARTITIONS; p++) {
    for (let i = 0; i < PER_PARTITION; i++) messages.push({ partition: p, value: `r${round}-${p}-${i}` })
  }
  await producer.send({ topic, acks: -1, messages })
  await producer.disconnect()
}

function splitEvenly (sets) {
  const union = new Set()
  for (const s of sets) {
    for (const p of s) {
      if (union.has(p)) return false
      union.add(p)
    }
  }
  return union.size === PARTITIONS && sets.every(s => s.size === PARTITIONS / sets.length)
}

async function main () {
  const checked = []
  const admin = kafka.admin()
  await admin.connect()
  try {
    await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }] })
  } finally {
    await admin.disconnect()
  }

  // --- two members share the topic ---
  const records = []
  const a = member('a', records)
  const b = member('b', records)
  const running = [a]
  try {
    await a.start()
    await until(() => a.owned.size === PARTITIONS, 'a alone owns all 6')
    running.push(b)
    await b.start()
    await until(() => splitEvenly([a.owned, b.owned]), `a and b own 3 each (a=${[...a.owned]} b=${[...b.owned]})`)
    checked.push('two members split 3/3')

    await produce(1)
    await until(() => records.length >= PARTITIONS * PER_PARTITION, `all ${PARTITIONS * PER_PARTITION} records read`)
    await sleep(500) // anything more would be a duplicate
    const keys = records.map(r => `${r.partition}:${r.offset}`)
    assert.equal(new Set(keys).size, keys.length, 'a record was read twice')
    assert.equal(records.length, PARTITIONS * PER_PARTITION)
    for (const r of records) {
      const owner = r.member === 'a' ? a : b
      assert.ok(owner.owned.has(r.partition), `${r.member} read partition ${r.partition} it does not own`)
    }
    assert.ok(records.some(r => r.member === 'a') && records.some(r => r.member === 'b'), 'both members read')
    checked.push('each record read once, by its owner')
  } finally {
    // disconnect() commits what was read, then leaves the group.
    for (const m of running) await m.consumer.disconnect()
  }

  // --- the commits hold: a new member of the group starts where they left off ---
  const admin2 = kafka.admin()
  await admin2.connect()
  try {
    const offsets = await admin2.fetchOffsets({ groupId, topics: [topic] })
    const committed = offsets[0].partitions.map(p => [p.partition, p.offset]).sort((x, y) => x[0] - y[0])
    assert.deepEqual(committed, [...Array(PARTITIONS).keys()].map(p => [p, String(PER_PARTITION)]))
    checked.push('fetchOffsets shows the commits')
  } finally {
    await admin2.disconnect()
  }

  await produce(2)
  const later = []
  const c = member('c', later)
  try {
    await c.start()
    await until(() => later.length >= PARTITIONS * PER_PARTITION, `the ${PARTITIONS * PER_PARTITION} new records read`)
    await sleep(500)
    assert.equal(later.length, PARTITIONS * PER_PARTITION, 'records beyond the new ones were read again')
    for (const r of later) {
      assert.ok(r.value.startsWith('r2-'), `read an already committed record again: ${JSON.stringify(r)}`)
      assert.ok(r.offset >= PER_PARTITION && r.offset < 2 * PER_PARTITION, JSON.stringify(r))
    }
    checked.push('a new member resumes from the commits')
  } finally {
    await c.consumer.disconnect()
  }
  console.log(JSON.stringify({ ok: true, checked }))
}

const timer = setTimeout(() => {
  console.error('kafkajs groups test timed out after 100 s')
  process.exit(1)
}, 100000)

main().then(
  () => { clearTimeout(timer); process.exit(0) },
  err => {
    console.error(err && err.stack ? err.stack : String(err))
    if (err && err.cause) console.error('cause:', err.cause)
    process.exit(1)
  }
)
