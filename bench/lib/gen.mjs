/**
 * Deterministic audit entries for the bench: a seeded PRNG, so every run with the same seed and row
 * count produces byte-identical NDJSON.
 *
 * The shape follows a real MCP gateway's audit stream: UUIDv4 request ids, RFC 3339 timestamps with
 * microseconds (most in UTC, some with an offset), a few dozen subjects, roles, tools and backends,
 * nested request_args with strings, numbers, booleans and arrays, ~5% errors with a message, a few
 * denials and timeouts, log-normal latencies, and an unknown field now and then (stored in `extra`).
 * Lines average about 450 bytes.
 */

/** mulberry32: a small, fast, seedable 32-bit PRNG. Returns a function giving uint32 values. */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** A random (version 4, RFC 4122 variant) UUID from a uint32 source. */
export function uuidFrom(next) {
  const a = next();
  const b = next();
  const c = next();
  const d = next();
  const h = (x, s) => HEX[(x >>> s) & 0xff];
  return (
    h(a, 24) +
    h(a, 16) +
    h(a, 8) +
    h(a, 0) +
    '-' +
    h(b, 24) +
    h(b, 16) +
    '-' +
    HEX[0x40 | ((b >>> 8) & 0x0f)] +
    h(b, 0) +
    '-' +
    HEX[0x80 | ((c >>> 24) & 0x3f)] +
    h(c, 16) +
    '-' +
    h(c, 8) +
    h(c, 0) +
    h(d, 24) +
    h(d, 16) +
    h(d, 8) +
    h(d, 0)
  );
}

const PEOPLE = [
  'alice',
  'bob',
  'carol',
  'dmitri',
  'eun-ji',
  'farah',
  'gustavo',
  'hannah',
  'ines',
  'jonas',
  'kwame',
  'lena',
  'mateo',
  'nadia',
  'oskar',
  'priya',
  'quentin',
  'rosa',
  'sven',
  'tomoko',
  'ugo',
  'valeria',
  'wen',
  'yusuf',
];
const SUBJECTS = [
  ...PEOPLE.map((p) => `user:${p}@acme-corp.example`),
  'svc:ci-runner',
  'svc:nightly-report',
  'svc:support-triage-bot',
  'svc:data-sync',
  'agent:claude-desktop/alice',
  'agent:cursor/bob',
  'agent:copilot-workspace/priya',
  'agent:ops-autopilot',
  'spiffe://acme-corp.example/ns/agents/sa/research-agent',
  'spiffe://acme-corp.example/ns/agents/sa/billing-agent',
];
const ROLES = [
  'admin',
  'developer',
  'developer',
  'developer',
  'analyst',
  'analyst',
  'support',
  'service',
  'auditor',
];

/** Tools and the backend each is served by; args() makes its request_args object. */
const TOOLS = [
  ['github.create_issue', 'mcp-github-01', 'issue'],
  ['github.search_code', 'mcp-github-01', 'search'],
  ['github.get_pull_request', 'mcp-github-02', 'pr'],
  ['github.list_commits', 'mcp-github-02', 'pr'],
  ['gitlab.create_merge_request', 'mcp-gitlab', 'pr'],
  ['fs.read_file', 'mcp-filesystem', 'file'],
  ['fs.write_file', 'mcp-filesystem', 'file'],
  ['fs.list_directory', 'mcp-filesystem', 'file'],
  ['postgres.query', 'mcp-postgres-analytics', 'sql'],
  ['postgres.describe_table', 'mcp-postgres-analytics', 'sql'],
  ['snowflake.run_query', 'mcp-snowflake', 'sql'],
  ['slack.post_message', 'mcp-slack', 'chat'],
  ['slack.search_messages', 'mcp-slack', 'search'],
  ['jira.create_ticket', 'mcp-atlassian', 'issue'],
  ['jira.transition_issue', 'mcp-atlassian', 'issue'],
  ['confluence.search', 'mcp-atlassian', 'search'],
  ['web.fetch', 'mcp-fetch', 'http'],
  ['web.search', 'mcp-brave-search', 'search'],
  ['k8s.get_pods', 'mcp-kubernetes-prod', 'k8s'],
  ['k8s.get_logs', 'mcp-kubernetes-prod', 'k8s'],
  ['k8s.scale_deployment', 'mcp-kubernetes-prod', 'k8s'],
  ['aws.s3_get_object', 'mcp-aws-eu-west-1', 'file'],
  ['aws.cloudwatch_query', 'mcp-aws-eu-west-1', 'sql'],
  ['stripe.list_charges', 'mcp-stripe', 'http'],
  ['stripe.refund_charge', 'mcp-stripe', 'http'],
  ['sentry.list_issues', 'mcp-sentry', 'search'],
  ['linear.create_issue', 'mcp-linear', 'issue'],
  ['notion.query_database', 'mcp-notion', 'sql'],
  ['gdrive.search_files', 'mcp-google-workspace', 'search'],
  ['gmail.send_message', 'mcp-google-workspace', 'chat'],
  ['calendar.create_event', 'mcp-google-workspace', 'chat'],
  ['memory.store', 'mcp-memory', 'chat'],
  ['memory.recall', 'mcp-memory', 'search'],
  ['sequential_thinking.step', 'mcp-reasoning', 'chat'],
  ['time.convert_timezone', 'mcp-time', 'http'],
  ['shell.exec', 'mcp-sandbox', 'k8s'],
];
const WORDS =
  'audit quarterly revenue deploy rollback latency invoice customer migration schema index backup token cache retry outage incident review staging release budget forecast churn onboarding pipeline cluster replica vacuum metrics dashboard alert'.split(
    ' ',
  );
const REPOS = ['acme/payments', 'acme/gateway', 'acme/web', 'acme/infra', 'acme/ml-platform', 'acme/docs'];
const ERRORS = [
  'upstream returned 502 Bad Gateway after 3 attempts',
  'rate limit exceeded: 5000 requests per hour (retry after 1843 s)',
  'permission denied: resource is outside the allowed scope',
  'invalid argument "limit": must be between 1 and 1000',
  'connection reset by peer while reading the response body',
  'relation "public.orders_2026" does not exist',
  'file not found: /srv/shared/reports/q3/summary.xlsx',
  'context deadline exceeded',
  'JSON schema validation failed at $.labels[2]: expected string',
  'tool backend is draining; try another replica',
];

/**
 * Makes entries; call `next()` for each line (a string without the newline).
 * @param startMs the first entry's time (epoch ms)
 * @param stepScale stretches the gaps between timestamps (~2 ms apart on average at 1; e.g. 302.4
 *   spreads 1M entries over 7 days). The PRNG sequence, and so every other field, stays the same.
 */
export function makeGenerator(seed = 42, startMs = Date.UTC(2026, 10, 29, 8, 0, 0), stepScale = 1) {
  const r32 = prng(seed);
  const rnd = () => r32() / 4294967296;
  const int = (n) => Math.floor(rnd() * n);
  const pick = (arr) => arr[int(arr.length)];
  const words = (n) => {
    let s = pick(WORDS);
    for (let i = 1; i < n; i++) s += ` ${pick(WORDS)}`;
    return s;
  };
  /** Standard normal (Box–Muller). */
  const normal = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  let clockUs = startMs * 1000;

  const ts = () => {
    const step = 500 + int(3000); // ~2 ms apart on average (times stepScale)
    clockUs += stepScale === 1 ? step : Math.round(step * stepScale);
    const ms = Math.floor(clockUs / 1000);
    const us = String(clockUs % 1000).padStart(3, '0');
    if (rnd() < 0.2) {
      // Same instant, written with a +01:00 offset (a gateway in Central Europe).
      const d = new Date(ms + 3_600_000).toISOString();
      return `${d.slice(0, 23)}${us}+01:00`;
    }
    return `${new Date(ms).toISOString().slice(0, 23)}${us}Z`;
  };

  const args = (kind) => {
    switch (kind) {
      case 'issue':
        return {
          project: pick(REPOS),
          title: words(5 + int(6)),
          labels: [pick(WORDS), pick(WORDS)],
          priority: 1 + int(4),
          assignee: pick(PEOPLE),
        };
      case 'search':
        return { query: words(2 + int(5)), limit: 10 * (1 + int(10)), filters: { since_days: int(90) } };
      case 'pr':
        return { repo: pick(REPOS), number: 100 + int(9000), include: ['files', 'reviews'], per_page: 50 };
      case 'file':
        return {
          path: `/srv/shared/${pick(WORDS)}/${pick(WORDS)}-${int(1000)}.md`,
          encoding: 'utf-8',
          max_bytes: 65536,
        };
      case 'sql':
        return {
          sql: `SELECT ${pick(WORDS)}_id, sum(amount) FROM ${pick(WORDS)} WHERE created_at > now() - interval '${1 + int(30)} days' GROUP BY 1 LIMIT ${10 * (1 + int(100))}`,
          timeout_ms: 30000,
          params: [int(100000), pick(WORDS)],
        };
      case 'chat':
        return {
          channel: `#${pick(WORDS)}-${pick(WORDS)}`,
          text: words(8 + int(10)),
          thread_ts: `${1764403200 + int(9999999)}.${String(int(999999)).padStart(6, '0')}`,
        };
      case 'http':
        return {
          url: `https://api.${pick(WORDS)}.example/v2/${pick(WORDS)}?page=${1 + int(20)}`,
          method: pick(['GET', 'GET', 'GET', 'POST']),
          headers: { accept: 'application/json', 'x-request-source': 'mcp-gateway' },
          amount: int(100000) / 100,
        };
      default:
        return {
          namespace: pick(['prod', 'staging', 'payments', 'ml']),
          selector: { app: pick(WORDS), tier: pick(['web', 'worker', 'db']) },
          tail_lines: 100 * (1 + int(5)),
          follow: false,
        };
    }
  };

  return {
    /** The next entry: its NDJSON line (no newline). */
    next() {
      const [tool, backend, kind] = pick(TOOLS);
      const a = args(kind);
      if (rnd() < 0.02) a.api_key = `sk-live-${uuidFrom(r32).replaceAll('-', '').slice(0, 24)}`; // redacted
      const u = rnd();
      const status = u < 0.05 ? 'error' : u < 0.065 ? 'denied' : u < 0.07 ? 'timeout' : 'success';
      let latency = Math.round(Math.exp(4.2 + 1.1 * normal()));
      if (status === 'timeout') latency = 30000;
      const e = {
        request_id: uuidFrom(r32),
        timestamp: ts(),
        client_subject: pick(SUBJECTS),
        client_role: rnd() < 0.05 ? null : pick(ROLES),
        tool_name: tool,
        backend_name: rnd() < 0.03 ? null : backend,
        request_args: a,
        response_status: status,
        error_message:
          status === 'error'
            ? pick(ERRORS)
            : status === 'denied'
              ? `policy "${pick(['prod-readonly', 'no-pii', 'business-hours'])}" denies ${tool}`
              : status === 'timeout'
                ? 'backend did not answer within 30000 ms'
                : null,
        latency_ms: rnd() < 0.01 ? null : latency,
      };
      if (rnd() < 0.1) {
        e.session_id = uuidFrom(r32);
        e.gateway_version = '2.14.1';
      }
      return JSON.stringify(e);
    },
  };
}

/**
 * Replicates corpus lines with fresh request ids: the i-th replica of every line gets a new UUID
 * from the PRNG; the rest of the line is kept byte for byte.
 * @param lines the corpus lines (strings without newline), each starting with `{"request_id":"…"`
 */
export function makeCorpusReplicator(lines, seed = 42) {
  const r32 = prng(seed);
  const RID = /"request_id"\s*:\s*"[^"]*"/;
  let i = 0;
  return {
    next() {
      const line = lines[i % lines.length];
      i++;
      return line.replace(RID, `"request_id":"${uuidFrom(r32)}"`);
    },
  };
}
