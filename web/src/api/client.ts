import type { paths } from "./schema";
import { loadToken } from "./token";
import type { ErrorBody } from "./types";

export const API = "/api/v1";

/** An API error with the server's code, message and (for 422) the fields named. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public fields: string[] = [],
  ) {
    super(message);
  }
}

let onUnauthorized: () => void = () => {};
/** Called when the server refuses the token (401): the app goes back to the login page. */
export function setUnauthorizedHandler(f: () => void) {
  onUnauthorized = f;
}

export function authHeaders(token = loadToken()): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

type Query = Record<string, string | number | boolean | undefined | null>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

type Method = "get" | "put" | "post" | "delete" | "patch";
type StripPrefix<P> = P extends `/api/v1${infer R}` ? R : never;
/** A route of the API, written as in the OpenAPI document without the `/api/v1` prefix. */
export type Route = StripPrefix<keyof paths>;
type Operation<R extends Route, M extends Method> = NonNullable<paths[`/api/v1${R}`][M]>;
type ParamsOf<R extends Route, M extends Method> = [Operation<R, M>] extends [never]
  ? never // the route has no such method
  : Operation<R, M> extends { parameters: infer P }
    ? P
    : never;
type PathPart<P> = P extends { path: infer X } ? { path: X } : { path?: undefined };
type QueryPart<P> = P extends { query: infer Q }
  ? { query: Q }
  : P extends { query?: infer Q }
    ? [NonNullable<Q>] extends [never]
      ? { query?: undefined }
      : { query?: NonNullable<Q> }
    : { query?: undefined };
/** The path and query parameters the OpenAPI document declares for a route and method. */
export type RouteParams<R extends Route, M extends Method> = PathPart<ParamsOf<R, M>> & QueryPart<ParamsOf<R, M>>;

/**
 * The URL (below `/api/v1`) of a route, with its `{placeholders}` filled in and its query
 * string built, both typed from the OpenAPI document: a renamed or retyped parameter fails
 * the type check instead of the request.
 */
export function route<R extends Route, M extends Method>(_method: M, template: R, params: RouteParams<R, M>): string {
  const values = (params.path ?? {}) as Record<string, string | number>;
  const path = template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`route ${template}: no value for {${name}}`);
    return encodeURIComponent(String(v));
  });
  return withQuery(path, params.query as Query | undefined);
}

async function toError(res: Response): Promise<ApiError> {
  let body: ErrorBody | undefined;
  try {
    body = (await res.json()) as ErrorBody;
  } catch {
    /* not JSON */
  }
  const e = body?.error;
  const details = e?.details as { fields?: { field?: string }[] } | undefined;
  const fields = (details?.fields ?? []).map((f) => f.field ?? "").filter(Boolean);
  return new ApiError(res.status, e?.code ?? "http_" + res.status, e?.message ?? res.statusText, fields);
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  query?: Query;
  /** Return the body as text (diffs, file contents). */
  text?: boolean;
  token?: string;
  signal?: AbortSignal;
}

export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = { ...authHeaders(opts.token ?? loadToken()) };
  let body: BodyInit | undefined;
  if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  const res = await fetch(withQuery(API + path, opts.query), {
    method: opts.method ?? (body ? "POST" : "GET"),
    headers,
    body,
    signal: opts.signal,
  });
  if (!res.ok) {
    const err = await toError(res);
    if (res.status === 401) onUnauthorized();
    throw err;
  }
  if (res.status === 204) return undefined as T;
  if (opts.text) return (await res.text()) as T;
  return (await res.json()) as T;
}

export const post = <T>(path: string, body?: unknown) => api<T>(path, { method: "POST", body });
