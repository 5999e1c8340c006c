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

/** Text with the characters real audit data holds and friendly generators leave out. */
const HARD_TEXT = [
  'SELECT "name", e\'tab\\there\' FROM "Kunden" WHERE note LIKE \'%\\_%\'',
  'C:\\Users\\Müller\\Documents\\Q3 Übersicht.xlsx',
  '{"inner":"json \\"inside\\" a string","n":[1,2,3]}',
  'Ошибка: нет доступа к таблице «заказы»',
  '注文テーブルへのアクセスが拒否されました',
  'línea 1\nlínea 2\r\n\tsangría',
  'bell\u0007 backspace\b formfeed\f esc\u001b[31m unit\u001f',
  'emoji 🚀✅ and math ∑∫√ and arrows ←→',
  'path /srv/data/2026/11/29/part-00017.parquet?x=1&y=2#frag',
  'quote " backslash \\ slash / and "quoted \\"twice\\""',
];

/**
 * Hard entries (issue 9, the independent check's first data set): escapes of every kind (`\n`,
 * `\t`, `\\`, `\"`, `\u00xx`), non-ASCII text, control characters, nested objects and arrays,
 * decimals and exponents, extra fields. Same shape of fields as {@link makeGenerator}; every line
 * is a valid entry. Some strings are written with `\u00xx` escapes for characters JSON.stringify
 * would keep raw, as other producers do.
 */
export function makeHardGenerator(seed = 42, startMs = Date.UTC(2026, 10, 29, 8, 0, 0)) {
  const r32 = prng(seed);
  const rnd = () => r32() / 4294967296;
  const int = (n) => Math.floor(rnd() * n);
  const pick = (arr) => arr[int(arr.length)];
  let clockUs = startMs * 1000;
  const ts = () => {
    clockUs += 500 + int(3000);
    const ms = Math.floor(clockUs / 1000);
    return `${new Date(ms).toISOString().slice(0, 23)}${String(clockUs % 1000).padStart(3, '0')}Z`;
  };
  /** JSON text of a string with some characters as \u00xx escapes (non-ASCII, controls). */
  const escaped = (s) =>
    JSON.stringify(s).replace(/[\u0080-\u00ff\u0001-\u0007]/g, (c) =>
      rnd() < 0.5 ? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}` : c,
    );
  const number = () =>
    pick([
      () => String(int(1_000_000)),
      () => (rnd() * 1000).toFixed(6),
      () => `${(rnd() * 9 + 1).toFixed(3)}e${int(40) - 20}`,
      () => `-${int(100)}.${int(1000)}E+${int(10)}`,
      () => '12345678901234567890.123456789',
    ])();
  /** JSON text of a nested value, depth-bounded. */
  const value = (depth) => {
    const u = rnd();
    if (depth > 3 || u < 0.35) return escaped(pick(HARD_TEXT));
    if (u < 0.55) return number();
    if (u < 0.6) return pick(['true', 'false', 'null']);
    if (u < 0.8) {
      const n = 1 + int(4);
      return `[${Array.from({ length: n }, () => value(depth + 1)).join(',')}]`;
    }
    const n = 1 + int(4);
    const keys = ['query', 'päth', 'filter', 'opts', 'données', 'キー', 'limit', 'nested'];
    return `{${Array.from({ length: n }, (_, k) => `${JSON.stringify(`${pick(keys)}${k}`)}:${value(depth + 1)}`).join(',')}}`;
  };
  const subjects = ['user:müller', 'user:ødegaard', 'svc:批处理', 'user:"quoted"', 'user:tab\there', ''];
  return {
    next() {
      const status = rnd() < 0.1 ? 'error' : 'success';
      const parts = [
        `"request_id":"${uuidFrom(r32)}"`,
        `"timestamp":"${ts()}"`,
        `"client_subject":${escaped(pick(subjects))}`,
        `"client_role":${rnd() < 0.1 ? 'null' : escaped(pick(['analyst', 'rôle\\admin', 'ops\tteam']))}`,
        `"tool_name":${escaped(pick(['sql.query', 'file.read', 'http.fetch', 'suche.volltext', '検索']))}`,
        `"backend_name":${escaped(pick(['pg-main', 'fs\\share', 'api-ü']))}`,
        `"request_args":{"text":${escaped(pick(HARD_TEXT))},"args":${value(0)},"n":${number()}}`,
        `"response_status":"${status}"`,
        `"error_message":${status === 'error' ? escaped(pick(HARD_TEXT)) : 'null'}`,
        `"latency_ms":${int(5000)}`,
      ];
      if (rnd() < 0.5) parts.push(`"trace":{"span":${escaped(pick(HARD_TEXT))},"ratio":${number()}}`);
      if (rnd() < 0.3) parts.push(`"labels":[${escaped(pick(HARD_TEXT))},${number()}]`);
      return `{${parts.join(',')}}`;
    },
  };
}
