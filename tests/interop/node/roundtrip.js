// kafkajs round trip against a kavka broker: admin (create/describe/configs/partitions/offsets/
// delete records/delete), produce with acks 0/1/-1 (none and gzip), and fetch through kafkajs'
// own protocol layer (the consumer needs consumer groups, which come later).
// Usage: node roundtrip.js <host:port> <topic-prefix>
// Prints one JSON line with what it checked; exits 1 with the failure on stderr.
'use strict'

const assert = require('node:assert/strict')
const { Kafka, logLevel, CompressionTypes, ConfigResourceTypes } = require('kafkajs')

const [bootstrap, prefix] = process.argv.slice(2)
if (!bootstrap || !prefix) {
  console.error('usage: node roundtrip.js <host:port> <topic-prefix>')
  process.exit(2)
}

const kafka = new Kafka({
  clientId: 'kavka-interop-kafkajs',
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
})

// kafkajs exposes no assign()-style consumer; use its own Cluster/Broker layer for Fetch.
function createCluster () {
  const sym = Object.getOwnPropertySymbols(kafka).find(s => s.toString().includes('createCluster'))
  assert.ok(sym, 'kafkajs internals changed: no createCluster symbol')
  return kafka[sym]({ allowAutoTopicCreation: false })
}

async function fetchAll (cluster, topic, partition, fromOffset, want) {
  await cluster.addTargetTopic(topic)
  await cluster.refreshMetadata()
  const leaders = cluster.findLeaderForPartitions(topic, [partition])
  const [nodeId] = Object.keys(leaders)
  const broker = await cluster.findBroker({ nodeId })
  const out = []
  let offset = fromOffset
  for (let round = 0; round < 50 && out.length < want; round++) {
    const res = await broker.fetch({
      replicaId: -1,
      isolationLevel: 0,
      maxWaitTime: 500,
      minBytes: 1,
      maxBytes: 1 << 20,
      topics: [{ topic, partitions: [{ partition, fetchOffset: String(offset), maxBytes: 1 << 20 }] }],
    })
    const p = res.responses[0].partitions[0]
    assert.equal(p.errorCode, 0, `fetch error ${p.errorCode}`)
    for (const m of p.messages) {
      if (Number(m.offset) >= offset) out.push(m)
    }
    if (out.length) offset = Number(out[out.length - 1].offset) + 1
  }
  return out
}

async function main () {
  const checked = []
  const admin = kafka.admin()
  await admin.connect()
  const topic = `${prefix}-js`
  const topic2 = `${prefix}-js2`
  try {
    // --- admin ---
    const cluster = await admin.describeCluster()
    assert.equal(cluster.brokers.length, 1)
    assert.equal(`${cluster.brokers[0].host}:${cluster.brokers[0].port}`, bootstrap)
    assert.ok(cluster.clusterId, 'cluster id')
    checked.push('describeCluster')

    const created = await admin.createTopics({
      waitForLeaders: true,
      topics: [
        { topic, numPartitions: 2, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '7777777' }] },
        { topic: topic2, numPartitions: 1, replicationFactor: 1 },
      ],
    })
    assert.equal(created, true)
    const again = await admin.createTopics({ topics: [{ topic, numPartitions: 2 }] })
    assert.equal(again, false, 'creating an existing topic reports false')
    assert.ok((await admin.listTopics()).includes(topic))
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.deepEqual(md.topics[0].partitions.map(p => p.partitionId).sort(), [0, 1])
    checked.push('createTopics', 'listTopics', 'fetchTopicMetadata')

    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
    })
    assert.equal(described.resources[0].errorCode, 0)
    assert.equal(described.resources[0].configEntries.find(e => e.configName === 'retention.ms').configValue, '7777777')
    await admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '8888888' }] }],
    })
    const altered = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }],
    })
    assert.equal(altered.resources[0].configEntries[0].configValue, '8888888')
    checked.push('describeConfigs', 'alterConfigs')

    await admin.createPartitions({ topicPartitions: [{ topic, count: 3 }] })
    const md3 = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.equal(md3.topics[0].partitions.length, 3)
    checked.push('createPartitions')

    // --- produce ---
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    const sent = []
    for (const [acks, compression] of [[-1, CompressionTypes.None], [1, CompressionTypes.GZIP], [-1, CompressionTypes.GZIP]]) {
      const messages = []
      for (let i = 0; i < 50; i++) {
        messages.push({ partition: 0, key: `js-k${sent.length + i}`, value: `js-v${sent.length + i}`, headers: { h: `x${sent.length + i}` } })
      }
      const res = await producer.send({ topic, acks, compression, messages })
      assert.equal(res[0].errorCode, 0)
      sent.push(...messages)
    }
    // acks=0: no response expected; the records still land.
    await producer.send({ topic: topic2, acks: 0, messages: [{ value: 'fire-and-forget' }] })
    await producer.disconnect()
    checked.push('produce acks -1/1/0, none+gzip')

    // --- list offsets ---
    const offsets = await admin.fetchTopicOffsets(topic)
    const p0 = offsets.find(o => o.partition === 0)
    assert.equal(p0.low, '0')
    assert.equal(p0.high, String(sent.length))
    checked.push('fetchTopicOffsets')

    // --- fetch ---
    const fcluster = createCluster()
    await fcluster.connect()
    try {
      const got = await fetchAll(fcluster, topic, 0, 0, sent.length)
      assert.equal(got.length, sent.length)
      got.forEach((m, i) => {
        assert.equal(Number(m.offset), i)
        assert.equal(m.key.toString(), sent[i].key)
        assert.equal(m.value.toString(), sent[i].value)
        assert.equal(m.headers.h.toString(), sent[i].headers.h)
      })
      const mid = await fetchAll(fcluster, topic, 0, 77, 3)
      assert.deepEqual(mid.slice(0, 3).map(m => Number(m.offset)), [77, 78, 79])
      let ff = []
      for (let i = 0; i < 20 && ff.length === 0; i++) ff = await fetchAll(fcluster, topic2, 0, 0, 1)
      assert.equal(ff[0].value.toString(), 'fire-and-forget')
    } finally {
      await fcluster.disconnect()
    }
    checked.push('fetch')

    // --- delete records, delete topics ---
    await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: '10' }] })
    const after = await admin.fetchTopicOffsets(topic)
    assert.equal(after.find(o => o.partition === 0).low, '10')
    checked.push('deleteTopicRecords')

    await admin.deleteTopics({ topics: [topic, topic2], timeout: 15000 })
    const left = await admin.listTopics()
    assert.ok(!left.includes(topic) && !left.includes(topic2), `topics still listed: ${left}`)
    checked.push('deleteTopics')
  } finally {
    await admin.disconnect()
  }
  console.log(JSON.stringify({ ok: true, checked }))
}

const timer = setTimeout(() => {
  console.error('kafkajs round trip timed out after 90 s')
  process.exit(1)
}, 90000)

main().then(
  () => { clearTimeout(timer); process.exit(0) },
  err => {
    console.error(err && err.stack ? err.stack : String(err))
    if (err && err.cause) console.error('cause:', err.cause)
    process.exit(1)
  }
)
