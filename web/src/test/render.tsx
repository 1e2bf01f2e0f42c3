import type { ReactNode } from "react";
import { render } from "@testing-library/react";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { createMemoryHistory, createRootRoute, createRouter, RouterProvider } from "@tanstack/react-router";

/** Renders a component inside the providers the app gives it (query client, router). */
export function renderInApp(ui: ReactNode) {
  const qc = new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } });
  const rootRoute = createRootRoute({ component: () => <>{ui}</> });
  const router = createRouter({ routeTree: rootRoute, history: createMemoryHistory({ initialEntries: ["/"] }) });
  return { qc, ...render(<QueryClientProvider client={qc}><RouterProvider router={router} /></QueryClientProvider>) };
}

/** Replaces fetch, recording each request and answering 204. */
export function recordFetch() {
  const calls: { url: string; method: string; body: unknown; auth: string | undefined }[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (url: string, init?: RequestInit) => {
      const headers = (init?.headers ?? {}) as Record<string, string>;
      calls.push({ url, method: init?.method ?? "GET", body: init?.body ? JSON.parse(String(init.body)) : undefined, auth: headers.Authorization });
      return new Response(null, { status: 204 });
    }),
  );
  return calls;
}

/**
 * Replaces fetch with a small fake API: each request is recorded and answered by the first
 * handler whose "METHOD /path" key matches the request (path without /api/v1, query left
 * out); unmatched requests get a 404 error body.
 */
export function stubApi(handlers: Record<string, (url: URL, body: unknown) => unknown>) {
  const calls: { method: string; path: string; query: string; body: unknown }[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (input: string, init?: RequestInit) => {
      const url = new URL(input, "http://dashboard.test");
      const method = init?.method ?? "GET";
      const path = url.pathname.replace(/^\/api\/v1/, "");
      const body = init?.body ? JSON.parse(String(init.body)) : undefined;
      calls.push({ method, path, query: url.search, body });
      const handler = handlers[`${method} ${path}`];
      if (!handler) {
        return Response.json({ error: { code: "not_found", message: `no stub for ${method} ${path}` } }, { status: 404 });
      }
      return Response.json(handler(url, body));
    }),
  );
  return calls;
}
