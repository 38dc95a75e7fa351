// A js-libp2p peer for tests/net/test_interop_js.py.
//
//   node peer.mjs <multiaddr ending in /p2p/<id>> <topic> [timeout seconds, default 40]
//
// Builds a node with TCP, Noise, Yamux, identify, ping and gossipsub (strict signing, the default), dials the
// address and prints one JSON object per line as things happen:
//   {"event":"started","peer":..}               (our own peer id)
//   {"event":"subscribed","topic":..}
//   {"event":"connected","peer":..}
//   {"event":"identify","peer":..,"protocols":[..],"agent":..,"publicKey":hex of the protobuf-encoded key}
//   {"event":"ping","ms":..}                    (three times)
//   {"event":"message","topic":..,"from":..,"data":hex}
//   {"event":"streams","protocols":[..]}        (the protocols of the streams open on the connection at the end)
// It exits 0 after the pings and the first message on the topic, and 1 after {"event":"error",..} on failure or
// timeout.
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')

function fail (error) {
  emit({ event: 'error', error: String(error?.stack ?? error) })
  process.exit(1)
}
process.on('uncaughtException', fail)
process.on('unhandledRejection', fail)

const [addr, topic, timeoutArg = '40'] = process.argv.slice(2)
if (addr == null || topic == null) fail('usage: node peer.mjs <multiaddr with /p2p/id> <topic> [timeout s]')
const timeout = Number(timeoutArg)
setTimeout(() => fail(`timeout after ${timeout} s`), timeout * 1000)

const target = multiaddr(addr)
const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping(), pubsub: gossipsub() }
})
emit({ event: 'started', peer: node.peerId.toString() })

node.addEventListener('peer:identify', ({ detail }) => {
  if (detail.peerId.toString() !== target.getPeerId()) return
  emit({
    event: 'identify',
    peer: detail.peerId.toString(),
    protocols: detail.protocols,
    agent: detail.agentVersion ?? null,
    publicKey: detail.publicKey == null ? null : hex(detail.publicKey)
  })
})

const received = new Promise((resolve) => {
  node.services.pubsub.addEventListener('message', ({ detail: msg }) => {
    if (msg.topic !== topic) return
    emit({ event: 'message', topic: msg.topic, from: msg.from?.toString() ?? null, data: hex(msg.data) })
    resolve()
  })
})
node.services.pubsub.subscribe(topic)
emit({ event: 'subscribed', topic })

const connection = await node.dial(target)
emit({ event: 'connected', peer: connection.remotePeer.toString() })
for (let i = 0; i < 3; i++) {
  emit({ event: 'ping', ms: await node.services.ping.ping(connection.remotePeer) })
}

await received
emit({ event: 'streams', protocols: connection.streams.map((s) => s.protocol) })
await node.stop()
process.exit(0)
