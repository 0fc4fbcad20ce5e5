// Create-to-first-command-output with the published E2B JS SDK: the time
// from Sandbox.create() to the first stdout bytes of a command run in the
// new sandbox, for each template named in E2B_BENCH_TEMPLATES (a cold
// `base`, a template with a warm pool), E2B_BENCH_N times each after a
// warm-up. Prints one JSON object of percentiles in milliseconds.
const { Sandbox } = await import(process.env.E2B_SDK ?? 'e2b251')
const n = Number(process.env.E2B_BENCH_N ?? 50)
const warm = Number(process.env.E2B_BENCH_WARMUP ?? 5)

function pct(xs, p) {
  const s = xs.slice().sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}

async function once(template) {
  const t0 = performance.now()
  let first = 0
  const sbx = await Sandbox.create(template)
  await sbx.commands.run('echo ready', { onStdout: () => { if (!first) first = performance.now() } })
  if (!first) throw new Error('no output')
  await sbx.kill()
  return first - t0
}

const out = {}
for (const template of (process.env.E2B_BENCH_TEMPLATES ?? 'base').split(',')) {
  for (let i = 0; i < warm; i++) await once(template)
  const xs = []
  for (let i = 0; i < n; i++) xs.push(await once(template))
  out[template] = { n, p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99), min: Math.min(...xs) }
}
console.log(JSON.stringify(out))
