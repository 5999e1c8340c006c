/**
 * The forms of a database URL (CONTRACT.md §2) as node-postgres reads them (pg-connection-string):
 * `postgres://USER:PASSWORD@HOST:PORT/DATABASE?…`, `postgresql://…`, or `socket:/dir?db=NAME`.
 * Anything else (`127.0.0.1:5432`, `postgress://…`, a libpq `host=… dbname=…` string) is refused
 * before a connection is tried, so the user learns which form is expected instead of a confusing
 * connection error against the wrong host.
 */

/** The schemes node-postgres accepts in a connection string. */
const SCHEMES = ['postgres:', 'postgresql:', 'socket:'];

/** What the error message shows as the expected form. */
export const DATABASE_URL_FORM = 'postgres://USER@HOST:PORT/DATABASE (password in PGPASSWORD or ~/.pgpass)';

/**
 * Why `url` is not a database URL, or null when it is one.
 * @returns a short reason naming the expected form, e.g. for `127.0.0.1:5432`
 */
export function databaseUrlProblem(url: string): string | null {
  const trimmed = url.trim();
  if (trimmed === '') return `an empty URL; expected ${DATABASE_URL_FORM}`;
  let u: URL;
  try {
    u = new URL(trimmed);
  } catch {
    const hostPort = /^\[?[\w.:-]+?\]?:\d+(\/\w*)?$/.test(trimmed);
    return hostPort
      ? `not a URL; for a host and port write postgres://USER@${trimmed.replace(/\/.*/, '')}/DATABASE`
      : `not a URL; expected ${DATABASE_URL_FORM}`;
  }
  if (!SCHEMES.includes(u.protocol)) {
    // `localhost:5432` parses as scheme "localhost:"
    if (/^\d+(\/.*)?$/.test(u.pathname)) {
      return `not a URL; for a host and port write postgres://USER@${trimmed.replace(/\/.*/, '')}/DATABASE`;
    }
    return `unknown scheme '${u.protocol.replace(/:$/, '')}'; expected ${DATABASE_URL_FORM}`;
  }
  if (u.protocol !== 'socket:' && u.port !== '' && !/^\d+$/.test(u.port)) return `bad port '${u.port}'`;
  return null;
}

/** The URL with its password replaced by `****` (for logs and `config`); unparsable text unchanged. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '****';
    for (const key of [...u.searchParams.keys()]) {
      if (/^(password|sslpassword|sslkey)$/i.test(key)) u.searchParams.set(key, '****');
    }
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:****@');
  }
}

/** The URL with its password removed (never written to a file). */
export function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    for (const key of [...u.searchParams.keys()]) {
      if (/^(password|sslpassword)$/i.test(key)) u.searchParams.delete(key);
    }
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1@');
  }
}

/** True when the URL carries a password. */
export function hasPassword(url: string): boolean {
  try {
    const u = new URL(url);
    return u.password !== '' || u.searchParams.has('password');
  } catch {
    return false;
  }
}
