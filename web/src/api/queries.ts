// Every server read the dashboard makes, keyed so that live events can invalidate them.
import { useQuery, useQueryClient, type QueryClient } from "@tanstack/react-query";
import { api, route } from "./client";
import type {
  DirListing,
  ImageView,
  Interaction,
  LogChunk,
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
