// The E2B JS SDK's network options against sandpool serve running in a
// fake internet (e2e/e2b_network_test.go): allowInternetAccess, an
// allowlist made of denyOut ALL_TRAFFIC and allowOut, updateNetwork.
// Every check throws on failure; at the end one JSON line says what was
// seen.
import assert from 'node:assert/strict'

const sdk = await import(process.env.E2B_SDK)
const { Sandbox, ALL_TRAFFIC } = sdk
const made = []
const seen = {}

// reach runs curl in the sandbox and says whether the URL answered.
async function reach(sbx, url) {
  const r = await sbx.commands.run(`curl -sS --max-time 10 ${url}`).catch((e) => e)
  return r.exitCode === 0 && r.stdout.includes('host=')
}

try {
  // No internet: nothing answers; getInfo says so.
  const off = await Sandbox.create({ allowInternetAccess: false, timeoutMs: 120_000 })
  made.push(off)
  assert.equal(await reach(off, 'http://allowed.test/'), false, 'allowInternetAccess false reached the internet')
  assert.equal((await off.getInfo()).allowInternetAccess, false)
  // Opened while it runs.
  await off.updateNetwork({ allowInternetAccess: true })
  assert.equal(await reach(off, 'http://allowed.test/'), true, 'updateNetwork did not open the sandbox')
  seen.updated = true

  // An allowlist: only allowed.test.
  const list = await Sandbox.create({ network: { denyOut: [ALL_TRAFFIC], allowOut: ['allowed.test'] }, timeoutMs: 120_000 })
  made.push(list)
  assert.equal(await reach(list, 'http://allowed.test/'), true, 'the allowlist refused allowed.test')
  assert.equal(await reach(list, 'http://denied.test/'), false, 'the allowlist let denied.test through')
  const info = await list.getInfo()
  assert.deepEqual(info.network?.allowOut, ['allowed.test'])
  assert.ok(info.network?.denyOut?.includes(ALL_TRAFFIC))
  seen.allowlist = true

  // Open, less a denied name.
  const deny = await Sandbox.create({ network: { denyOut: ['denied.test'] }, timeoutMs: 120_000 })
  made.push(deny)
  assert.equal(await reach(deny, 'http://allowed.test/'), true)
  assert.equal(await reach(deny, 'http://denied.test/'), false, 'denyOut let denied.test through')
  seen.denied = true
} finally {
  for (const s of made) await s.kill().catch(() => {})
}
console.log(JSON.stringify(seen))
