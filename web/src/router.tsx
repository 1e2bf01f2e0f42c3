import { createRootRoute, createRoute, createRouter } from "@tanstack/react-router";
import { App } from "./App";
import { MissionControl } from "./pages/MissionControl";
import { OpenPreview, SandboxDetail, Sandboxes } from "./pages/Sandboxes";
import { System } from "./pages/System";
import { TaskDetail } from "./pages/TaskDetail";
import { Tasks, type TasksSearch } from "./pages/Tasks";
import { Templates } from "./pages/Templates";
import { WorkspaceEdit, WorkspaceForm, Workspaces } from "./pages/Workspaces";

const str = (v: unknown) => (typeof v === "string" && v ? v : undefined);

const rootRoute = createRootRoute({ component: App });

const homeRoute = createRoute({ getParentRoute: () => rootRoute, path: "/", component: MissionControl });

const tasksRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/tasks",
  validateSearch: (s: Record<string, unknown>): TasksSearch => ({
    workspace: str(s.workspace),
    new: s.new === true || s.new === "true" ? true : undefined,
  }),
  component: () => <Tasks search={tasksRoute.useSearch()} />,
});

const taskRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/tasks/$taskId",
  component: () => {
    const { taskId } = taskRoute.useParams();
    return <TaskDetail taskId={taskId} key={taskId} />;
  },
});

const sandboxesRoute = createRoute({ getParentRoute: () => rootRoute, path: "/sandboxes", component: Sandboxes });

const sandboxRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/sandboxes/$sandboxId",
  component: () => {
    const { sandboxId } = sandboxRoute.useParams();
    return <SandboxDetail sandboxId={sandboxId} key={sandboxId} />;
  },
});

const workspacesRoute = createRoute({ getParentRoute: () => rootRoute, path: "/workspaces", component: Workspaces });

const newWorkspaceRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/workspaces/new",
  component: () => <WorkspaceForm />,
});

const workspaceRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/workspaces/$workspaceId",
  component: () => {
    const { workspaceId } = workspaceRoute.useParams();
    return <WorkspaceEdit workspaceId={workspaceId} key={workspaceId} />;
  },
});

const templatesRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/templates",
  validateSearch: (s: Record<string, unknown>): { workspace?: string } => ({ workspace: str(s.workspace) }),
  component: () => <Templates workspace={templatesRoute.useSearch().workspace} />,
});

const openRoute = createRoute({
  getParentRoute: () => rootRoute,
  path: "/open",
  validateSearch: (s: Record<string, unknown>): { sandbox?: string; port?: number; path?: string } => ({
    sandbox: str(s.sandbox),
    port: Number.isInteger(Number(s.port)) && Number(s.port) > 0 ? Number(s.port) : undefined,
    path: str(s.path),
  }),
  component: () => <OpenPreview {...openRoute.useSearch()} />,
});

const systemRoute = createRoute({ getParentRoute: () => rootRoute, path: "/system", component: System });

export const routeTree = rootRoute.addChildren([
  homeRoute,
  tasksRoute,
  taskRoute,
  sandboxesRoute,
  sandboxRoute,
  workspacesRoute,
  newWorkspaceRoute,
  workspaceRoute,
  templatesRoute,
  systemRoute,
  openRoute,
]);

export const router = createRouter({ routeTree });

declare module "@tanstack/react-router" {
  interface Register {
    router: typeof router;
  }
}
