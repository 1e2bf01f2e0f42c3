// Every server read the dashboard makes, keyed so that live events can invalidate them.
import { useQueries, useQuery, useQueryClient, type QueryClient } from "@tanstack/react-query";
import { api, route } from "./client";
import type {
  DirListing,
  ImageView,
  Interaction,
  LogChunk,
  PrebuildStatus,
  Preview,
  SandboxList,
  Sandbox,
  ServiceStatus,
  SessionTemplate,
  SystemInfo,
  Task,
  TaskEvent,
  Workspace,
} from "./types";

export const useSystem = () => useQuery({ queryKey: ["system"], queryFn: () => api<SystemInfo>("/system") });
export const useImages = () => useQuery({ queryKey: ["images"], queryFn: () => api<ImageView[]>("/images") });
export const useWorkspaces = () =>
  useQuery({ queryKey: ["workspaces"], queryFn: () => api<Workspace[]>("/workspaces") });
export const useWorkspace = (id: string) =>
  useQuery({ queryKey: ["workspace", id], queryFn: () => api<Workspace>(`/workspaces/${encodeURIComponent(id)}`) });
export const useTasks = () => useQuery({ queryKey: ["tasks"], queryFn: () => api<Task[]>("/tasks") });
export const useTask = (id: string) =>
  useQuery({ queryKey: ["task", id], queryFn: () => api<Task>(`/tasks/${encodeURIComponent(id)}`) });
export const useAttention = () =>
  useQuery({ queryKey: ["attention"], queryFn: () => api<Interaction[]>("/attention") });
export const useSandboxes = () =>
  useQuery({ queryKey: ["sandboxes"], queryFn: async () => (await api<SandboxList>("/sandboxes")).sandboxes });
export const useSandbox = (id: string) =>
  useQuery({ queryKey: ["sandbox", id], queryFn: () => api<Sandbox>(`/sandboxes/${encodeURIComponent(id)}`) });
export const usePreviews = (id: string) =>
  useQuery({
    queryKey: ["previews", id],
    queryFn: () => api<Preview[]>(`/sandboxes/${encodeURIComponent(id)}/previews`),
    refetchInterval: 5000,
  });
export const useTemplates = (workspace?: string) =>
  useQuery({
    queryKey: ["templates", workspace ?? ""],
    queryFn: () =>
      api<SessionTemplate[]>(workspace ? `/workspaces/${encodeURIComponent(workspace)}/templates` : "/templates"),
  });

export const useDiff = (taskId: string, enabled: boolean) =>
  useQuery({
    queryKey: ["diff", taskId],
    enabled,
    retry: false,
    queryFn: () => api<string>(`/tasks/${encodeURIComponent(taskId)}/diff`, { text: true }),
  });

/** The task's timeline, fetched incrementally: each refetch asks only for events after the last seq. */
export function useTaskEvents(taskId: string) {
  const qc = useQueryClient();
  return useQuery({
    queryKey: ["task-events", taskId],
    queryFn: () => fetchNewTaskEvents(qc, taskId),
  });
}

export async function fetchNewTaskEvents(qc: QueryClient, taskId: string): Promise<TaskEvent[]> {
  const known = qc.getQueryData<TaskEvent[]>(["task-events", taskId]) ?? [];
  const out = [...known];
  const limit = 1000;
  for (;;) {
    const after = out.length ? out[out.length - 1].seq : 0;
    const page = await api<TaskEvent[]>(`/tasks/${encodeURIComponent(taskId)}/events`, { query: { after, limit } });
    out.push(...page);
    if (page.length < limit) return out;
  }
}

export const useDir = (sandbox: string, path: string, enabled: boolean) =>
  useQuery({
    queryKey: ["files", sandbox, path],
    enabled,
    queryFn: () => api<DirListing>(route("get", "/sandboxes/{id}/files", { path: { id: sandbox }, query: { path } })),
  });

export const useServices = (sandbox: string, enabled: boolean) =>
  useQuery({
    queryKey: ["services", sandbox],
    enabled,
    queryFn: () => api<ServiceStatus[]>(`/sandboxes/${encodeURIComponent(sandbox)}/services`),
  });

export const fetchLogs = (sandbox: string, service: string, offset: number) =>
  api<LogChunk>(route("get", "/sandboxes/{id}/services/{name}/logs", { path: { id: sandbox, name: service }, query: { offset } }));

const prebuildsQuery = (workspace: string) => ({
  queryKey: ["prebuilds", workspace],
  queryFn: () => api<PrebuildStatus>(route("get", "/workspaces/{workspace}/prebuilds", { path: { workspace } })),
  // Events refresh it; while a build runs it is also re-read, so a build's end shows
  // even when the event stream is reconnecting.
  refetchInterval: (q: { state: { data?: PrebuildStatus } }) => (q.state.data?.building ? 2000 : false),
});

/** A workspace's current prebuild, the build in progress and the history. */
export const usePrebuilds = (workspace: string) => useQuery(prebuildsQuery(workspace));

/** The prebuild status of every workspace given (one read each, shared with usePrebuilds). */
export const usePrebuildStatuses = (workspaces: string[]) => useQueries({ queries: workspaces.map(prebuildsQuery) });

/** A build log as read so far: its text (the newest part, when long) and where to go on reading. */
export interface BuildLog {
  text: string;
  next: number;
  size: number;
}

/** How much of a build log the page keeps; older output is dropped from the view. */
export const BUILD_LOG_KEEP = 200_000;
/** Pages read in one refresh, so a huge log cannot keep one refresh going for long. */
const BUILD_LOG_PAGES = 16;

/** Reads a prebuild's log on from the offset already read (stored in the query cache). */
export async function fetchPrebuildLog(qc: QueryClient, id: string): Promise<BuildLog> {
  const known = qc.getQueryData<BuildLog>(["prebuild-log", id]) ?? { text: "", next: 0, size: 0 };
  let { text, next, size } = known;
  for (let page = 0; page < BUILD_LOG_PAGES; page++) {
    const chunk = await api<LogChunk>(route("get", "/prebuilds/{id}/logs", { path: { id }, query: { offset: next } }));
    text += chunk.data;
    next = chunk.next_offset;
    size = chunk.size;
    if (chunk.data.length === 0 || chunk.next_offset >= chunk.size) break;
  }
  return { text: text.length > BUILD_LOG_KEEP ? text.slice(-BUILD_LOG_KEEP) : text, next, size };
}

/**
 * A prebuild's build log. While `follow` is set (the build is running) it is re-read every
 * second from where the last read ended; a prebuild_state event refreshes it once more, so
 * the end of the log shows when the build finishes and the re-reading stops.
 */
export function usePrebuildLog(id: string | undefined, follow: boolean) {
  const qc = useQueryClient();
  return useQuery({
    queryKey: ["prebuild-log", id],
    enabled: Boolean(id),
    refetchInterval: follow ? 1000 : false,
    queryFn: () => fetchPrebuildLog(qc, id!),
  });
}
