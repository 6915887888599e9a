// The hash route: `#/path?query`. Views read it through their context and change it here.

export function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = raw.split('?');
  return { path, query: new URLSearchParams(search) };
}

/** Navigate to the current path with a new query string (empty values dropped). */
export function setQuery(params) {
  const { path } = parseHash();
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') search.set(key, value);
  }
  const text = search.toString();
  location.hash = `#${path}${text ? `?${text}` : ''}`;
}
