// The published E2B JS SDK, unchanged, against sandpool serve. Run by
// e2e/e2b_test.go with E2B_SDK naming the package (e2b251: v2 routes,
// e2b250: v1 routes), E2B_API_URL = E2B_SANDBOX_URL = the server,
// E2B_API_KEY a tenant's key and E2B_OTHER_KEY another tenant's. Every
// check throws on failure; at the end one JSON line says what was seen.
import assert from 'node:assert/strict'
import http from 'node:http'

const sdk = await import(process.env.E2B_SDK)
const { Sandbox, CommandExitError, TimeoutError, SandboxNotFoundError, FilesystemEventType, FileType } = sdk
const otherKey = process.env.E2B_OTHER_KEY
const api = new URL(process.env.E2B_API_URL)
const enc = (s) => new TextEncoder().encode(s)
const seen = {}
const made = []

async function waitFor(what, fn, ms = 30_000) {
  const end = Date.now() + ms
  for (;;) {
    if (await fn()) return
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

// A raw request to the server (for what the SDK cannot send: a host name
// of its own, foreign credentials).
function raw(method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: api.hostname, port: api.port, method, path, headers }, (res) => {
      let data = ''
      res.on('data', (c) => { data += c })
      res.on('end', () => resolve({ status: res.statusCode, body: data }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

try {
  // Create with metadata and environment variables.
  const tag = `t${Date.now()}`
  const sbx = await Sandbox.create({ metadata: { user: 'a b', run: tag }, envs: { FOO: 'bar' }, timeoutMs: 120_000 })
  made.push(sbx.sandboxId)
  assert.match(sbx.sandboxId, /^[a-z0-9]+$/)

  // Commands: foreground, stderr, environment, user and cwd, the default
  // user, E2B's variables.
  let r = await sbx.commands.run('echo $FOO; echo err >&2')
  assert.deepEqual([r.exitCode, r.stdout, r.stderr], [0, 'bar\n', 'err\n'])
  r = await sbx.commands.run('id -un; pwd', { cwd: '/tmp', user: 'root' })
  assert.equal(r.stdout, 'root\n/tmp\n')
  r = await sbx.commands.run('id -un; pwd; echo $E2B_SANDBOX $E2B_SANDBOX_ID $A', { envs: { A: 'per-command' } })
  assert.equal(r.stdout, `user\n/home/user\ntrue ${sbx.sandboxId} per-command\n`)
  await assert.rejects(sbx.commands.run('pwd', { cwd: '/nope' }), /cwd/)
  // Non-zero exit: CommandExitError with the output.
  await assert.rejects(sbx.commands.run('echo partial; exit 3'),
    (e) => e instanceof CommandExitError && e.exitCode === 3 && e.stdout === 'partial\n')
  // The deadline kills the command, with what it started.
  await assert.rejects(sbx.commands.run('sleep 300 & echo started; sleep 300', { timeoutMs: 1000 }), (e) => e instanceof TimeoutError)
  await waitFor('the timed-out command to be gone', async () => (await sbx.commands.run('pgrep -c -x sleep || true')).stdout.trim() === '0')
  seen.timeout = true

  // stdin: a background command fed, then closed.
  const cat = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(cat.pid, 'hi\n')
  await sbx.commands.closeStdin(cat.pid)
  r = await cat.wait()
  assert.equal(r.stdout, 'hi\n')
  // Without stdin, a command reads nothing (and does not hang).
  r = await sbx.commands.run('cat; echo done')
  assert.equal(r.stdout, 'done\n')

  // Background: listed, reattached, killed; a second kill finds nothing.
  const bg = await sbx.commands.run('echo bg-started; sleep 100', { background: true, timeoutMs: 0 })
  await waitFor('bg output', () => bg.stdout.includes('bg-started'))
  const list = await sbx.commands.list()
  assert.ok(list.some((p) => p.pid === bg.pid && p.cmd === '/bin/bash'), JSON.stringify(list))
  await bg.disconnect()
  const again = await sbx.commands.connect(bg.pid)
  assert.equal(await sbx.commands.kill(bg.pid), true)
  await assert.rejects(again.wait(), (e) => e instanceof CommandExitError && e.exitCode === -1)
  assert.equal(again.stdout, '', 'a reattach gets live output only')
  assert.equal(await sbx.commands.kill(bg.pid), false)
  assert.ok(!(await sbx.commands.list()).some((p) => p.pid === bg.pid))

  // A terminal: its size, input, resize.
  let term = ''
  const pty = await sbx.pty.create({ cols: 80, rows: 24, timeoutMs: 60_000, onData: (d) => { term += new TextDecoder().decode(d) } })
  await sbx.pty.sendInput(pty.pid, enc('stty size; tty\n'))
  await waitFor('the terminal size and name', () => term.includes('24 80') && /\/dev\/pts\//.test(term))
  await sbx.pty.resize(pty.pid, { cols: 100, rows: 30 })
  await sbx.pty.sendInput(pty.pid, enc('stty size\n'))
  await waitFor('the new size', () => term.includes('30 100'))
  await sbx.pty.sendInput(pty.pid, enc('exit 0\n'))
  r = await pty.wait()
  assert.equal(r.exitCode, 0)
  seen.pty = true

  // Files: write one and many, read, list with depth, exists, makeDir,
  // rename, remove, getInfo.
  await sbx.files.write('/home/user/a.txt', 'abc')
  assert.equal(await sbx.files.read('a.txt'), 'abc') // relative to home
  const many = await sbx.files.write([{ path: '/tmp/b.txt', data: 'b' }, { path: 'c/d.txt', data: 'c' }])
  assert.deepEqual(many.map((f) => f.path).sort(), ['/home/user/c/d.txt', '/tmp/b.txt'])
  assert.equal(await sbx.files.read('/home/user/c/d.txt'), 'c')
  const big = 'e'.repeat(100_000)
  await sbx.files.write('/tmp/e.txt', big, { useOctetStream: true, gzip: true })
  assert.equal(await sbx.files.read('/tmp/e.txt', { gzip: true }), big)
  assert.equal((await sbx.files.read('/tmp/e.txt', { format: 'bytes' })).length, big.length)
  await sbx.files.write('/tmp/empty.txt', '')
  assert.equal(await sbx.files.read('/tmp/empty.txt'), '')
  const entries = await sbx.files.list('/home/user', { depth: 2 })
  assert.ok(entries.some((e) => e.path === '/home/user/c/d.txt' && e.type === FileType.FILE), JSON.stringify(entries))
  assert.ok(entries.some((e) => e.path === '/home/user/c' && e.type === FileType.DIR))
  assert.ok(!(await sbx.files.list('/home/user')).some((e) => e.path === '/home/user/c/d.txt'))
  assert.equal(await sbx.files.exists('/nope'), false)
  assert.equal(await sbx.files.exists('/tmp/b.txt'), true)
  assert.equal(await sbx.files.makeDir('/tmp/x/y'), true)
  assert.equal(await sbx.files.makeDir('/tmp/x/y'), false)
  await sbx.files.rename('/tmp/e.txt', '/tmp/z/e.txt')
  assert.equal(await sbx.files.exists('/tmp/e.txt'), false)
  assert.equal(await sbx.files.exists('/tmp/z/e.txt'), true)
  await sbx.files.remove('/tmp/z')
  assert.equal(await sbx.files.exists('/tmp/z'), false)
  const info = await sbx.files.getInfo('/tmp/b.txt')
  assert.deepEqual([info.type, info.owner, info.size], [FileType.FILE, 'user', 1])
  // Paths never leave the sandbox; the user's rights hold.
  await assert.rejects(sbx.files.read('/../../etc/shadow'))
  await assert.rejects(sbx.files.write('/etc/owned', 'x'))
  await assert.rejects(sbx.files.read('/no/such/file'), (e) => e instanceof sdk.FileNotFoundError || e instanceof sdk.NotFoundError)

  // watchDir, recursive.
  await sbx.files.makeDir('/tmp/w')
  const events = []
  const watch = await sbx.files.watchDir('/tmp/w', (ev) => { events.push(ev) }, { recursive: true })
  await sbx.files.write('/tmp/w/sub/f.txt', 'w')
  await waitFor('watch events', () => events.some((e) => e.name === 'sub/f.txt' && e.type === FilesystemEventType.CREATE) &&
    events.some((e) => e.name === 'sub' && e.type === FilesystemEventType.CREATE))
  await watch.stop()
  seen.watch = events.length

  // Timeout, info, metrics, health.
  await sbx.setTimeout(60_000)
  const si = await sbx.getInfo()
  assert.equal(si.state, 'running')
  assert.deepEqual(si.metadata, { user: 'a b', run: tag })
  const metrics = await sbx.getMetrics()
  assert.ok(metrics.length >= 1 && metrics[0].memTotal === 512 << 20 && metrics[0].diskTotal > 0 && metrics[0].cpuCount === 1, JSON.stringify(metrics))
  assert.equal(await sbx.isRunning(), true)

  // getHost(port): an HTTP server in the sandbox, reached by its host
  // name with the sandbox's traffic token (no network in the sandbox).
  await sbx.commands.run('python3 -m http.server 8000 --bind 127.0.0.1', { background: true, timeoutMs: 0, cwd: '/tmp' })
  const host = sbx.getHost(8000)
  assert.equal(host, `8000-${sbx.sandboxId}.${process.env.E2B_DOMAIN ?? 'sandpool.localhost'}`)
  let page
  await waitFor('the server in the sandbox', async () => {
    page = await raw('GET', '/b.txt', { Host: host, 'E2B-Traffic-Access-Token': sbx.trafficAccessToken })
    return page.status === 200
  })
  assert.equal(page.body, 'b')
  // ... and by the routing headers.
  page = await raw('GET', '/b.txt', { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '8000', 'X-Access-Token': sbx.envdAccessToken })
  assert.deepEqual([page.status, page.body], [200, 'b'])
  // Knowing the id is not enough.
  assert.equal((await raw('GET', '/b.txt', { Host: host })).status, 401)
  assert.equal((await raw('GET', '/b.txt', { Host: host, 'X-Access-Token': 'x'.repeat(64) })).status, 401)
  seen.getHost = host
  // A signed /files URL (what uploadUrl/downloadUrl make), by host name.
  const envdHost = `49983-${sbx.sandboxId}.${process.env.E2B_DOMAIN ?? 'sandpool.localhost'}`
  const sig = await sdk.getSignature({ path: '/tmp/b.txt', operation: 'read', user: undefined, envdAccessToken: sbx.envdAccessToken })
  page = await raw('GET', `/files?path=${encodeURIComponent('/tmp/b.txt')}&signature=${encodeURIComponent(sig.signature)}`, { Host: envdHost })
  assert.deepEqual([page.status, page.body], [200, 'b'])
  assert.equal((await raw('GET', `/files?path=${encodeURIComponent('/tmp/b.txt')}&signature=v1_x`, { Host: envdHost })).status, 401)
  const wsig = await sdk.getSignature({ path: '/tmp/up.txt', operation: 'write', user: undefined, envdAccessToken: sbx.envdAccessToken, expirationInSeconds: 60 })
  page = await raw('POST', `/files?path=${encodeURIComponent('/tmp/up.txt')}&signature=${encodeURIComponent(wsig.signature)}&signature_expiration=${wsig.expiration}`,
    { Host: envdHost, 'Content-Type': 'application/octet-stream' }, 'up')
  assert.equal(page.status, 200, page.body)
  assert.equal(await sbx.files.read('/tmp/up.txt'), 'up')

  // Another tenant sees none of it and reaches none of it.
  const theirs = await Sandbox.list({ apiKey: otherKey }).nextItems()
  assert.ok(!theirs.some((s) => s.sandboxId === sbx.sandboxId))
  await assert.rejects(Sandbox.connect(sbx.sandboxId, { apiKey: otherKey }), (e) => e instanceof SandboxNotFoundError)
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId, { apiKey: otherKey }), (e) => e instanceof SandboxNotFoundError)
  assert.equal(await Sandbox.kill(sbx.sandboxId, { apiKey: otherKey }), false)
  assert.equal((await raw('GET', '/health', { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983', 'X-API-KEY': otherKey })).status, 401)
  assert.equal((await raw('GET', '/b.txt', { Host: host, 'X-API-KEY': otherKey })).status, 401)
  assert.equal((await raw('GET', '/b.txt', { Host: host, 'X-API-KEY': process.env.E2B_API_KEY })).status, 200)
  seen.isolated = true

  // List with filters and paging: two more sandboxes of this run.
  for (let i = 0; i < 2; i++) {
    const s = await Sandbox.create({ metadata: { run: tag, i: String(i) }, timeoutMs: 60_000 })
    made.push(s.sandboxId)
  }
  const pager = Sandbox.list({ query: { metadata: { run: tag } }, limit: 1 })
  const ids = []
  let pages = 0
  while (pager.hasNext) {
    const items = await pager.nextItems()
    pages++
    ids.push(...items.map((s) => s.sandboxId))
    assert.ok(items.length <= 1)
  }
  assert.deepEqual(ids.slice().sort(), made.slice().sort())
  assert.ok(pages >= 3)
  const filtered = await Sandbox.list({ query: { metadata: { user: 'a b', run: tag } } }).nextItems()
  assert.deepEqual(filtered.map((s) => s.sandboxId), [sbx.sandboxId])

  // Pause (twice: false), listed as paused, connect resumes it with its
  // processes, kill; a killed sandbox is gone.
  assert.equal(await sbx.pause(), true)
  assert.equal(await sbx.pause(), false)
  const paused = await Sandbox.list({ query: { metadata: { run: tag }, state: ['paused'] } }).nextItems()
  assert.deepEqual(paused.map((s) => s.sandboxId), [sbx.sandboxId])
  const running = await Sandbox.list({ query: { metadata: { run: tag }, state: ['running'] } }).nextItems()
  assert.equal(running.length, 2)
  assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
  assert.equal(await sbx.isRunning(), false) // not made with auto-resume: envd is not there
  const back = await Sandbox.connect(sbx.sandboxId)
  r = await back.commands.run('cat /tmp/b.txt')
  assert.equal(r.stdout, 'b')
  assert.equal(await back.isRunning(), true)
  seen.resumed = true
  assert.equal(await back.kill(), true)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), (e) => e instanceof SandboxNotFoundError)
  await assert.rejects(Sandbox.connect('zzz'), (e) => e instanceof SandboxNotFoundError)
  made.shift()

  // Auto-resume: envd traffic resumes a sandbox made with it.
  const auto = await Sandbox.create({ timeoutMs: 60_000, lifecycle: { onTimeout: 'pause', autoResume: true } })
  made.push(auto.sandboxId)
  await auto.commands.run('echo kept > /tmp/k')
  assert.equal(await auto.pause(), true)
  assert.equal(await auto.files.read('/tmp/k'), 'kept\n')
  assert.equal((await Sandbox.getInfo(auto.sandboxId)).state, 'running')
  seen.autoResume = true
} finally {
  for (const id of made) await Sandbox.kill(id).catch(() => {})
}
console.log(JSON.stringify(seen))
