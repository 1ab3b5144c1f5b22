// REST calls with the signed-in user's token. A 401 anywhere signs the page
// out (with the server's sentence); other failures become an ApiError whose
// message is the server's sentence, for forms to show.

const TOKEN_KEY = 'syncgate.token';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

export const auth = {
  get token() {
    try {
      return localStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  },
  set token(t) {
    try {
      if (t) localStorage.setItem(TOKEN_KEY, t);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // storage disabled: the token lives only as long as this page
    }
  },
  key: TOKEN_KEY,
  /** Called with a sentence when the server says the token is no good. */
  onUnauthorized(fn) {
    onUnauthorized = fn;
  },
};

/** The JWT's claims, or null when it cannot be read. */
export function claims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
  } catch (_) {
    return null;
  }
}

/** Local writes in flight and just done, so their echoes are not highlighted as "from elsewhere". */
const inFlight = new Map();
const recent = new Map();

export function isOwnEcho(table, id) {
  const key = `${table}:${id}`;
  const t = recent.get(key);
  if (t && Date.now() - t < 3000) return true;
  return (inFlight.get(table) || 0) > 0;
}

/** fetch JSON; resolves with the parsed body (null for 204). */
export async function api(method, path, body) {
  const table = path.match(/^\/api\/(meetings|clients|pipeline)\b/)?.[1];
  const writing = table && method !== 'GET';
  if (writing) inFlight.set(table, (inFlight.get(table) || 0) + 1);
  try {
    const headers = { accept: 'application/json' };
    const token = auth.token;
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (_) {
      throw new ApiError(0, 'network', 'The server cannot be reached right now. Check your connection and try again.');
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      json = null;
    }
    if (res.status === 401) {
      const why = (json && json.message) || 'the server did not accept your session';
      onUnauthorized(why);
      throw new ApiError(401, 'unauthorized', why);
    }
    if (!res.ok) {
      throw new ApiError(res.status, (json && json.error) || 'error', (json && json.message) || `The server answered ${res.status}.`);
    }
    if (writing && json && json.id != null) recent.set(`${table}:${json.id}`, Date.now());
    if (writing && method === 'DELETE') {
      const id = path.split('/')[3];
      recent.set(`${table}:${id}`, Date.now());
    }
    return json;
  } finally {
    if (writing) inFlight.set(table, inFlight.get(table) - 1);
  }
}
