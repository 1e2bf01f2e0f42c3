/**
 * Generated from openapi.json by scripts/gen-api.mjs (npm run gen:api). Do not edit.
 */

export interface paths {
    "/api/v1/attention": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Every pending permission request and question across tasks, oldest first. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description Include answered asks too. */
                    all: boolean;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Interaction"][];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/attention/{task_id}/{interaction_id}/answer": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Answer an ask: `{"kind":"permission","reply":"once|always|reject","message":…}`,
         *     `{"kind":"question","answers":[["label"],…]}` or `{"kind":"dismiss"}`. It reaches the
         *     agent at once.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    task_id: string;
                    interaction_id: string;
                };
                cookie?: never;
            };
            /** @description the answer */
            requestBody: {
                content: {
                    "application/json": Record<string, unknown>;
                };
            };
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The typed event stream (Server-Sent Events). Each event has an `id:`; reconnect with
         *     `Last-Event-ID` to receive everything missed, in order, exactly once.
         */
        get: {
            parameters: {
                query?: {
                    /**
                     * @description Resume after this event id (the `Last-Event-ID` header wins when both are sent);
                     *     without either, only new events are sent.
                     */
                    after?: number;
                    /** @description Only events about this sandbox. */
                    sandbox?: string;
                };
                header?: {
                    /** @description resume after this id */
                    "Last-Event-ID"?: string | null;
                };
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "text/event-stream": components["schemas"]["Event"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/health": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Liveness of the manager. The only route that needs no token. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Health"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/images": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Every image recipe, and every workspace's extension, and whether it is built. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ImageView"][];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/images/{name}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One image: its build, what it holds, and how far a running build has come. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ImageView"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        /** Remove every build of an image. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/images/{name}/build": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Build an image (a no-op when a build of the same recipe and inputs exists). */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ImageView"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                500: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/prebuilds": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Every workspace's prebuilds, newest first (for an overview of what is building,
         *     failed or stale).
         */
        get: {
            parameters: {
                query?: {
                    /** @description Only prebuilds in this state (`building`, `ready`, `failed`, `superseded`). */
                    state?: string;
                    /** @description Only the ready prebuilds that are stale. */
                    stale?: boolean;
                };
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Prebuild"][];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/prebuilds/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One prebuild. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Prebuild"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/prebuilds/{id}/logs": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * A slice of a prebuild's build log (the clone, each init command's output, the
         *     capture). Poll with `next_offset` while the prebuild is `building`.
         */
        get: {
            parameters: {
                query?: {
                    /** @description Byte offset to read from (the `next_offset` of the previous read). */
                    offset?: number;
                    /** @description Bytes to read at most (default 64 KiB, at most 1 MiB). */
                    limit?: number;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["LogChunk"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** List sandboxes in creation order. */
        get: {
            parameters: {
                query?: {
                    /** @description Comma-separated states; default: every state but `destroyed`. */
                    state?: string;
                    /** @description Workspace id or name. */
                    workspace?: string;
                    name?: string;
                    /** @description Page size, 1–1000 (default 1000). */
                    limit?: number;
                    /** @description Cursor: the `next` of the previous page. */
                    after?: string;
                };
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SandboxList"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        /**
         * Create a sandbox. It is recorded in `creating` and comes up in the background; with
         *     `?wait=true` the answer comes once it is `running` (or in `error`, with the reason).
         */
        post: {
            parameters: {
                query?: {
                    /** @description Answer only once the sandbox is running (or failed). */
                    wait?: boolean;
                };
                header?: {
                    /** @description a retried create returns the same sandbox */
                    "Idempotency-Key"?: string | null;
                };
                path?: never;
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["CreateSandbox"];
                };
            };
            responses: {
                /** @description idempotent replay */
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                400: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                413: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        /** Destroy a sandbox and every host resource it owns. The record stays, `destroyed`. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/disk": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The storage a sandbox owns on its own (its writes, not what it shares with its
         *     image or prebuild).
         */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SandboxDisk"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/editor": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * `POST /api/v1/sandboxes/{id}/editor`: starts VS Code in the browser (`code-server`, from
         *     the sandbox's image) as the service `editor` if it is not running, waits until it
         *     listens, and answers like a preview link for its port. Its own auth is off: the
         *     preview origin's cookie is the lock.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["PreviewLink"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                504: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/exec": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Run a command and wait for it: exit code (or signal), stdout and stderr. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["ExecBody"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ExecResult"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/exec/stream": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Run a command and stream its output as Server-Sent Events: `stdout` and `stderr`
         *     events carry `{"data": "..."}`, the final `exit` event the exit status. Closing the
         *     connection kills the command.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["ExecBody"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "text/event-stream": components["schemas"]["ExecEvent"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/files": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** List a directory, entries sorted by name. */
        get: {
            parameters: {
                query: {
                    /** @description Absolute path in the sandbox, or relative to its work directory. */
                    path: string;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["DirListing"];
                    };
                };
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        /** Delete a file or directory. */
        delete: {
            parameters: {
                query: {
                    path: string;
                    /** @description Delete a non-empty directory with everything in it. */
                    recursive?: boolean;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/files/content": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Read a file's bytes. */
        get: {
            parameters: {
                query: {
                    /** @description Absolute path in the sandbox, or relative to its work directory. */
                    path: string;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/octet-stream": number[];
                    };
                };
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        /** Write a file (the request body is its content), creating parent directories. */
        put: {
            parameters: {
                query: {
                    path: string;
                    /** @description Permission bits in octal, e.g. `644` (the default) or `600`. */
                    mode?: string;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/octet-stream": number[];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["FileStat"];
                    };
                };
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                413: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/files/mkdir": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Create a directory (and its parents). */
        post: {
            parameters: {
                query: {
                    /** @description Absolute path in the sandbox, or relative to its work directory. */
                    path: string;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["FileStat"];
                    };
                };
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/files/stat": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: {
            parameters: {
                query: {
                    /** @description Absolute path in the sandbox, or relative to its work directory. */
                    path: string;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["FileStat"];
                    };
                };
                403: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/pause": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/ports/{port}/link": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** A link that opens a sandbox's port (a dev server) in a browser, without the token. */
        post: {
            parameters: {
                query?: {
                    /** @description Where `open_url` lands on the preview origin (default `/`). */
                    path?: string;
                };
                header?: never;
                path: {
                    id: string;
                    /** @description 1-65535 */
                    port: number;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["PreviewLink"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/previews": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The previews of a sandbox: one per dev command of its workspace. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Preview"][];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/resume": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/services": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ServiceStatus"][];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/services/{name}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ServiceStatus"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        /** Define a service and (re)start it under the agent's watchdog. */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                    name: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["ServiceSpec"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ServiceStatus"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        post?: never;
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/services/{name}/logs": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A slice of a service's log. */
        get: {
            parameters: {
                query?: {
                    /** @description Byte offset to read from (the `next_offset` of the previous read). */
                    offset?: number;
                    /** @description Bytes to read at most (default 64 KiB, at most 1 MiB). */
                    limit?: number;
                };
                header?: never;
                path: {
                    id: string;
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["LogChunk"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/services/{name}/start": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ServiceStatus"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/services/{name}/stop": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ServiceStatus"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/start": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Start a stopped (or failed) sandbox; `?wait=true` answers once it runs. */
        post: {
            parameters: {
                query?: {
                    /** @description Answer only once the sandbox is running (or failed). */
                    wait?: boolean;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/stop": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Stop a sandbox; its disk (or directory) is kept for a later start. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Sandbox"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/sandboxes/{id}/terminal": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Open a shell in a running sandbox (WebSocket).
         * @description Authenticate with `Authorization: Bearer <token>`, or (browsers) with the subprotocol
         *     list `["atelier.terminal", "bearer.<token>"]`; the answer then selects
         *     `atelier.terminal`. Binary frames are terminal bytes both ways. Text frames are JSON:
         *     the client sends `{"type":"resize","cols":N,"rows":M}`; the server first sends
         *     `{"type":"session","id":"<sid>","resumed":false}` and, when the shell ends,
         *     `{"type":"exit","code":N}` before closing. A detached shell lives 5 minutes; reconnect
         *     with `session=<sid>` to get it back with up to 64 KiB of its recent output.
         */
        get: {
            parameters: {
                query: {
                    /** @description Terminal width in columns (1–1000). */
                    cols: number;
                    /** @description Terminal height in rows (1–1000). */
                    rows: number;
                    /**
                     * @description Reattach to this session (the id of an earlier `session` message) if its shell is
                     *     still alive; otherwise a new shell starts.
                     */
                    session?: string;
                    /**
                     * @description Where a new shell starts: absolute, or relative to the sandbox's root (default:
                     *     the home directory). A directory that does not exist is refused (422).
                     */
                    cwd?: string;
                };
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                /** @description Switching to the WebSocket */
                101: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                /** @description No valid token (header or subprotocol) */
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                /** @description No such sandbox */
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                /** @description The sandbox is not running */
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                /** @description A bad `cols`, `rows`, `session` or `cwd` */
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                /** @description Not a WebSocket request */
                426: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                /** @description The sandbox's agent could not open a terminal */
                502: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/system": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Driver, versions and counts. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SystemInfo"];
                    };
                };
                401: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Tasks, newest first. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description Comma-separated statuses. */
                    status: string | null;
                    /** @description Workspace id or name. */
                    workspace: string | null;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"][];
                    };
                };
            };
        };
        put?: never;
        /** Create a task; with `"dispatch": true` it is queued at once (else it waits in the backlog). */
        post: {
            parameters: {
                query?: never;
                header?: {
                    /** @description a retried create returns the same task */
                    "Idempotency-Key"?: string | null;
                };
                path?: never;
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["TaskSpec"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"];
                    };
                };
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"];
                    };
                };
                400: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks/{id}/cancel": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Stop a task; its sandbox is destroyed, its preserved branch kept. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks/{id}/diff": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The branch's unified diff against its base (once the turn has ended). */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "text/plain": string;
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks/{id}/dispatch": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Queue a task from the backlog (or retry a failed one). */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks/{id}/done": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Accept a task in review. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks/{id}/events": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The task's timeline: every normalized agent event, in order. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                    /** @description Only events after this sequence number. */
                    after: number;
                    /** @description At most this many (default 500, at most 5000). */
                    limit: number | null;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["TaskEvent"][];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/tasks/{id}/review": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Chain a review: a new task runs `template` on this task's branch, in a fresh sandbox. */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    id: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["ReviewRequest"];
                };
            };
            responses: {
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Task"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/templates": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The templates in force globally. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SessionTemplate"][];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/templates/{name}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        /** Override (or add) a template for every workspace. */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    name: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["SessionTemplate"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SessionTemplate"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        post?: never;
        /** Drop the global override (back to the built-in). */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    name: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/workspaces": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get: {
            parameters: {
                query?: never;
                header?: never;
                path?: never;
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Workspace"][];
                    };
                };
            };
        };
        put?: never;
        /** Create a workspace. Secrets are write-only: the answer shows their names and a mask. */
        post: {
            parameters: {
                query?: never;
                header?: {
                    /** @description a retried create returns the first result */
                    "Idempotency-Key"?: string | null;
                };
                path?: never;
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["WorkspaceSpec"];
                };
            };
            responses: {
                201: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Workspace"];
                    };
                };
                400: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/workspaces/{workspace}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Get a workspace by id or by name. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description id or name */
                    workspace: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Workspace"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        /** Delete a workspace; refused (409) while it still has sandboxes. */
        delete: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description id or name */
                    workspace: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                204: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content?: never;
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        options?: never;
        head?: never;
        /**
         * Change a workspace: fields present replace the stored ones; secrets are merged
         *     (`secrets` adds or overwrites, `remove_secrets` deletes by name or path).
         */
        patch: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description id or name */
                    workspace: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["WorkspacePatch"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Workspace"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        trace?: never;
    };
    "/api/v1/workspaces/{workspace}/prebuilds": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The workspace's current prebuild, the build in progress, and the history. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description id or name */
                    workspace: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["PrebuildStatus"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        /**
         * Start a prebuild of the workspace (or promote one of its running sandboxes). The
         *     build runs in the background; follow it with the status and logs routes.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description id or name */
                    workspace: string;
                };
                cookie?: never;
            };
            requestBody?: {
                content: {
                    "application/json": null | components["schemas"]["StartPrebuild"];
                };
            };
            responses: {
                202: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["Prebuild"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                /** @description a build is in progress, or the sandbox is not running */
                409: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/workspaces/{workspace}/prebuilds/check": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Check the current prebuild against its inputs now (`git ls-remote` of every repo,
         *     the workspace's settings, the base image). A stale prebuild keeps serving; with the
         *     workspace's `prebuild.auto_rebuild` a new build starts.
         */
        post: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    /** @description id or name */
                    workspace: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["PrebuildStatus"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/workspaces/{workspace}/templates": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The templates in force for a workspace. */
        get: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    workspace: string;
                };
                cookie?: never;
            };
            requestBody?: never;
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SessionTemplate"][];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/workspaces/{workspace}/templates/{name}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        /** Override (or add) a template for one workspace. */
        put: {
            parameters: {
                query?: never;
                header?: never;
                path: {
                    workspace: string;
                    name: string;
                };
                cookie?: never;
            };
            requestBody: {
                content: {
                    "application/json": components["schemas"]["SessionTemplate"];
                };
            };
            responses: {
                200: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["SessionTemplate"];
                    };
                };
                404: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
                422: {
                    headers: {
                        [name: string]: unknown;
                    };
                    content: {
                        "application/json": components["schemas"]["ErrorBody"];
                    };
                };
            };
        };
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        /** @description What to run: an argv vector (no shell), or a string run by `/bin/sh -c`. */
        CommandLine: {
            argv: string[];
        } | {
            shell: string;
        };
        /**
         * @description A request for a new sandbox, as the API takes it: every field defaults from the
         *     workspace (or the built-in defaults without one).
         */
        CreateSandbox: {
            /** Format: int32 */
            disk_mib?: number | null;
            image?: string | null;
            /** Format: int32 */
            memory_mib?: number | null;
            /** @description DNS label; defaults to the workspace's name (or `sandbox`). */
            name?: string | null;
            /**
             * @description Start as a clone of the workspace's ready prebuild. Default: when one fits (same
             *     driver, image and machine size), else boot cold; `true` requires one (409 if
             *     none fits); `false` always boots cold.
             */
            prebuild?: boolean | null;
            /**
             * @description Host folders shared into the sandbox (at most 8). A sandbox with
             *     any boots cold: a prebuild's snapshot cannot carry a host folder.
             */
            shared_folders?: components["schemas"]["SharedFolder"][];
            /** Format: int32 */
            vcpus?: number | null;
            /** @description Workspace id or name; its resources and image are the defaults. */
            workspace?: string | null;
        };
        /** @description A named dev server. */
        DevCommand: {
            /** @example npm run dev */
            command: string;
            /** @example web */
            name: string;
            /**
             * Format: int32
             * @example 5173
             */
            port: number;
            /** @description Whether the port's preview opens without signing in (default: only with the token). */
            public?: boolean;
        };
        DirListing: {
            /** @description Entries sorted by name. */
            entries: components["schemas"]["FileStat"][];
            path: string;
        };
        /** @enum {string} */
        Effort: "low" | "medium" | "high" | "max";
        /** @description The agent settings of one effort level. */
        EffortSettings: {
            /** @description `provider/model`; the agent's default when absent. */
            model?: string | null;
            /** @description Plan before changing anything. */
            plan?: boolean;
            /** @description Reasoning effort (the agent's "variant"), e.g. `low`, `high`. */
            reasoning?: string | null;
        };
        /**
         * @description How much of the outside a sandbox reaches.
         * @enum {string}
         */
        Egress: "open" | "none" | "allow";
        EnvSecret: {
            /** @example OPENAI_API_KEY */
            name: string;
            value: string;
        };
        /** @description Error body shared with the manager's API: `{"error":{"code","message","details"}}`. */
        ErrorBody: {
            error: components["schemas"]["ErrorDetail"];
        };
        ErrorDetail: {
            /** @description Stable, machine-readable code, e.g. `not_found`, `invalid_value`. */
            code: string;
            details?: Record<string, unknown>;
            message: string;
        };
        /** @description One event as stored and streamed: `id` orders events and lets a client resume. */
        Event: components["schemas"]["EventKind"] & {
            /** Format: date-time */
            at: string;
            /** Format: int64 */
            id: number;
        };
        /** @description What happened. The `type` tag is also the SSE event name. */
        EventKind: {
            from?: null | components["schemas"]["SandboxState"];
            reason?: string | null;
            sandbox_id: components["schemas"]["SandboxId"];
            to: components["schemas"]["SandboxState"];
            /** @enum {string} */
            type: "sandbox_state";
        } | {
            name: string;
            /** @enum {string} */
            type: "workspace_created";
            workspace_id: components["schemas"]["WorkspaceId"];
        } | {
            name: string;
            /** @enum {string} */
            type: "workspace_updated";
            workspace_id: components["schemas"]["WorkspaceId"];
        } | {
            /** @enum {string} */
            type: "workspace_deleted";
            workspace_id: components["schemas"]["WorkspaceId"];
        } | {
            from?: null | components["schemas"]["TaskStatus"];
            reason?: string | null;
            task_id: string;
            to: components["schemas"]["TaskStatus"];
            /** @enum {string} */
            type: "task_status";
        } | {
            activity: Record<string, unknown>;
            task_id: string;
            /** @enum {string} */
            type: "task_activity";
        } | {
            interaction_id: string;
            task_id: string;
            title: string;
            /** @enum {string} */
            type: "attention_asked";
        } | {
            interaction_id: string;
            outcome: string;
            task_id: string;
            /** @enum {string} */
            type: "attention_resolved";
        } | {
            from?: null | components["schemas"]["PrebuildState"];
            prebuild_id: string;
            reason?: string | null;
            to: components["schemas"]["PrebuildState"];
            /** @enum {string} */
            type: "prebuild_state";
            workspace_id: components["schemas"]["WorkspaceId"];
        };
        /** @description A command to run in a sandbox. */
        ExecBody: {
            /**
             * @example [
             *       "-la"
             *     ]
             */
            args?: string[];
            /**
             * @description The program (or, with `shell: true`, a shell script).
             * @example ls
             */
            command: string;
            cwd?: string | null;
            env?: {
                [key: string]: string;
            };
            /**
             * Format: int64
             * @description Bytes of stdout and of stderr kept, each (default 16 MiB).
             */
            output_limit?: number | null;
            /** @description Run `command` with `/bin/sh -c` (then `args` must be empty). */
            shell?: boolean;
            /** @description Text written to the command's standard input. */
            stdin?: string | null;
            /**
             * Format: int64
             * @description Kill the command after this many milliseconds (1 ms – 24 h; default 10 min).
             */
            timeout_ms?: number | null;
            user?: string | null;
        };
        /** @description One line of a streaming exec. Output chunks are lossy UTF-8 split on character boundaries. */
        ExecEvent: {
            data: string;
            /** @enum {string} */
            type: "stdout";
        } | {
            data: string;
            /** @enum {string} */
            type: "stderr";
        } | (components["schemas"]["ExitStatus"] & {
            /** @enum {string} */
            type: "exit";
        });
        ExecResult: components["schemas"]["ExitStatus"] & {
            /** @description Captured stderr (lossy UTF-8). */
            stderr: string;
            /** @description Captured stdout (lossy UTF-8). */
            stdout: string;
        };
        /** @description How a finished command ended. */
        ExitStatus: {
            /** Format: int64 */
            duration_ms: number;
            /**
             * Format: int32
             * @description Exit code, when the process exited normally.
             */
            exit_code?: number | null;
            /**
             * Format: int32
             * @description Signal number, when the process was killed by a signal.
             */
            signal?: number | null;
            stderr_truncated: boolean;
            stdout_truncated: boolean;
            timed_out: boolean;
        };
        /** @description Lines added and removed per file on the task's branch. */
        FileChange: {
            /** Format: int64 */
            added: number;
            path: string;
            /** Format: int64 */
            removed: number;
        };
        /** @enum {string} */
        FileKind: "file" | "dir" | "symlink" | "other";
        FileSecret: {
            content: string;
            /**
             * Format: int32
             * @description Octal permission bits, e.g. 384 (0600).
             */
            mode?: number;
            /**
             * @description Absolute path in the sandbox, or `~/…` for the dev user's home.
             * @example ~/.config/gh/hosts.yml
             */
            path: string;
        };
        FileStat: {
            kind: components["schemas"]["FileKind"];
            /**
             * Format: int32
             * @description Permission bits, e.g. 420 (0644).
             */
            mode: number;
            /**
             * Format: int64
             * @description Last modification, milliseconds since the Unix epoch.
             */
            modified_ms: number;
            name: string;
            /** @description Absolute path inside the sandbox. */
            path: string;
            /** Format: int64 */
            size: number;
        };
        Health: {
            /** @example ok */
            status: string;
            version: string;
        };
        /** @description A port on the host's loopback that sandboxes of the workspace may reach. */
        HostService: {
            /** @description What it is, for people (`model server`, `package cache`). */
            name?: string | null;
            /**
             * Format: int32
             * @example 8080
             */
            port: number;
        };
        ImageContentView: {
            /** @description A tool (`node`, `go`, `claude`) or a pinned npm package (`npm:opencode-ai`). */
            name: string;
            /** @description Its version, or `missing` when it did not answer at build time. */
            version: string;
        };
        /** @description `image: {base: dev, packages: [...], npm: [...], run: [...]}` in a workspace. */
        ImageExtension: {
            /**
             * @description The built-in image this one extends.
             * @example dev
             */
            base?: string;
            /**
             * @description More npm packages (`name@version`), installed globally.
             * @example [
             *       "pnpm@9.15.0"
             *     ]
             */
            npm?: string[];
            /**
             * @description More Debian packages (`name` or `name=version`), installed with the base's.
             * @example [
             *       "postgresql-client"
             *     ]
             */
            packages?: string[];
            /**
             * @description Shell commands run as root in the new root filesystem, in order, after the
             *     packages (network on: `pip install`, `curl`, … work).
             * @example [
             *       "pip install --break-system-packages ruff==0.8.4"
             *     ]
             */
            run?: string[];
        };
        ImageView: {
            /** @description A build of this image is running now. */
            building: boolean;
            built: boolean;
            /** Format: int64 */
            built_at_ms?: number | null;
            /** @description What the build holds, with versions (empty for images that record none). */
            contents: components["schemas"]["ImageContentView"][];
            extension?: null | components["schemas"]["ImageExtension"];
            /** @description Content address of the build (hash of the recipe and its inputs). */
            id?: string | null;
            kernel_version?: string | null;
            /** @description Recipe name (`minimal`, `dev`), or a workspace extension's `dev-ext-<hash>`. */
            name: string;
            /** Format: int64 */
            rootfs_bytes?: number | null;
            /**
             * @description The latest steps of the running build, or of the last one since the manager
             *     started (a failed build's last step says why).
             */
            steps: string[];
        };
        /** @description A question or permission request, as the attention feed shows it. */
        Interaction: {
            /** Format: date-time */
            asked_at: string;
            /** @description The agent's ask, normalized (options, patterns…). */
            detail: Record<string, unknown>;
            id: string;
            /** @description `permission` or `question`. */
            kind: string;
            outcome?: string | null;
            /** Format: date-time */
            resolved_at?: string | null;
            task_id: string;
            title: string;
        };
        /** @description A slice of a service's combined stdout+stderr log. */
        LogChunk: {
            /** @description Lossy UTF-8. */
            data: string;
            /**
             * Format: int64
             * @description Offset to ask for next.
             */
            next_offset: number;
            /**
             * Format: int64
             * @description Byte offset of `data` in the log.
             */
            offset: number;
            /**
             * Format: int64
             * @description Current size of the log.
             */
            size: number;
        };
        /** @description A workspace's network policy. */
        NetworkSpec: {
            /**
             * @description With `egress: allow`: IPv4 addresses or CIDRs, or host names (`*.example.com`
             *     for the names under one), each optionally with `:port` (TCP), e.g.
             *     `203.0.113.7:443`, `198.51.100.0/24`, `api.openai.com:443`.
             * @example [
             *       "203.0.113.7:443"
             *     ]
             */
            allow?: string[];
            egress?: components["schemas"]["Egress"];
            host_services?: components["schemas"]["HostService"][];
        };
        /** @description A prebuild as the API shows it. */
        Prebuild: {
            /**
             * Format: int32
             * @description Sandboxes that were started from it and still exist.
             */
            clones: number;
            commits: components["schemas"]["RepoCommit"][];
            /** @description Hash of the workspace settings the prebuild depends on. */
            config_hash: string;
            /** Format: date-time */
            created_at: string;
            /** @description The driver that built it; only its sandboxes can start from it. */
            driver: string;
            /** @description Why it failed. */
            error?: string | null;
            /** Format: date-time */
            finished_at?: string | null;
            id: string;
            /** @description Hash (id) of the base image it was built on. */
            image_hash: string;
            /** @description The end of the build log, for a failed build. */
            log_tail?: string | null;
            /** Format: int32 */
            memory_mib: number;
            /** @description Whether clones resume the captured memory (`true`) or boot the captured disk. */
            memory_snapshot: boolean;
            /** @description `build` or `promote`. */
            origin: string;
            sandbox_id?: null | components["schemas"]["SandboxId"];
            /** @description Why the prebuild no longer matches its inputs (it still serves until replaced). */
            stale?: string | null;
            state: components["schemas"]["PrebuildState"];
            /**
             * Format: int32
             * @description The machine size clones get.
             */
            vcpus: number;
            workspace_id: components["schemas"]["WorkspaceId"];
        };
        /** @description A workspace's prebuild policy. */
        PrebuildSettings: {
            /**
             * @description Start a new build by itself when the prebuild becomes stale (a branch moved, the
             *     workspace or its image changed). The old prebuild serves until the new is ready.
             */
            auto_rebuild?: boolean;
        };
        /**
         * @description Where a prebuild is in its life.
         *
         *     `building → ready | failed`; a ready prebuild becomes `superseded` when a newer one of
         *     its workspace is ready (it keeps serving until then). Staleness is not a state: a
         *     ready prebuild whose inputs moved carries a `stale` reason and keeps serving.
         * @enum {string}
         */
        PrebuildState: "building" | "ready" | "failed" | "superseded";
        /** @description A workspace's prebuilds at a glance. */
        PrebuildStatus: {
            building?: null | components["schemas"]["Prebuild"];
            current?: null | components["schemas"]["Prebuild"];
            /** @description Every prebuild of the workspace, newest first. */
            history: components["schemas"]["Prebuild"][];
        };
        /** @description A dev command of the sandbox's workspace, where it opens, and how it runs. */
        Preview: {
            command: string;
            /** @description The dev command's name (its service is `dev-<name>`). */
            name: string;
            /** Format: int32 */
            port: number;
            /** @description Opens without signing in. */
            public: boolean;
            service?: null | components["schemas"]["ServiceState"];
            /** @description The port's own origin. */
            url: string;
        };
        PreviewLink: {
            /** Format: date-time */
            expires_at: string;
            /** @description Signs a browser in to `preview_url` and lands on `path`; valid for one minute. */
            open_url: string;
            /** @description The port's own origin (`http://<port>-<sandbox>.<preview-domain>/`). */
            preview_url: string;
            /** @description Path on this manager (`/p/<grant>/`) that shows the sandbox's port. */
            url: string;
        };
        /**
         * @description What a task's agent spent through the model proxy, counted by the manager from the
         *     provider's replies (the agent's own count is [`Usage`]).
         */
        ProxyUsage: {
            /**
             * Format: double
             * @description From the prices of the workspace's provider models (0 where none are set).
             */
            cost_usd: number;
            /** Format: int64 */
            input_tokens: number;
            /** Format: int64 */
            output_tokens: number;
            /**
             * Format: int64
             * @description Calls forwarded to a provider.
             */
            requests: number;
        };
        /** @description How pushing a task's branch to origin went. */
        PushOutcome: {
            /** Format: date-time */
            at: string;
            branch: string;
            /** @description The commit now at the branch's head in origin. */
            commit?: string | null;
            /** @description Git's message when the push failed. */
            error?: string | null;
            ok: boolean;
            /** @description The origin, shown without credentials. */
            remote: string;
        };
        /** @description The commit a repo was at when the prebuild cloned it. */
        RepoCommit: {
            branch: string;
            commit: string;
            /** @description Where it is cloned, relative to the sandbox's working directory. */
            path: string;
            url: string;
        };
        /** @description A git repository cloned into every sandbox. */
        RepoSpec: {
            /** @example main */
            branch?: string;
            /** @description Where to clone, relative to the sandbox's work directory; defaults to the repo name. */
            path?: string | null;
            /**
             * @description Clone URL: https, http, ssh, git, file, or `user@host:path`.
             * @example https://github.com/example/app.git
             */
            url: string;
        };
        /** @description CPU, memory and disk given to a sandbox. */
        Resources: {
            /**
             * Format: int32
             * @description Disk size in MiB, 256–1048576.
             * @example 10240
             */
            disk_mib: number;
            /**
             * Format: int32
             * @description Memory in MiB, 512–16384.
             * @example 2048
             */
            memory_mib: number;
            /**
             * Format: int32
             * @description Virtual CPUs, 1–8.
             * @example 2
             */
            vcpus: number;
        };
        /** @enum {string} */
        RestartPolicy: "never" | "on_failure" | "always";
        ReviewRequest: {
            effort?: components["schemas"]["Effort"];
            /** @description A review template, e.g. `security-review`. */
            template: string;
        };
        /** @description A sandbox as the API shows it. */
        Sandbox: {
            /** Format: date-time */
            created_at: string;
            /** @description The hypervisor driver that runs it: `local`, `qemu` or `firecracker`. */
            driver: string;
            /** @description Why the sandbox is in `error` (or why its last operation failed). */
            error?: string | null;
            id: components["schemas"]["SandboxId"];
            image: string;
            name: string;
            /** @description The prebuild it was cloned from; `None` for a sandbox that booted cold. */
            prebuild_id?: string | null;
            resources: components["schemas"]["Resources"];
            /** @description Host folders shared into it. */
            shared_folders?: components["schemas"]["SharedFolder"][];
            state: components["schemas"]["SandboxState"];
            /** Format: date-time */
            updated_at: string;
            workspace_id?: null | components["schemas"]["WorkspaceId"];
        };
        SandboxCounts: {
            running: number;
            total: number;
        };
        /** @description What the storage of a sandbox costs on its own. */
        SandboxDisk: {
            /**
             * @description False when the filesystem cannot tell shared blocks apart (`own_bytes` then
             *     counts every allocated block: an upper bound).
             */
            exact: boolean;
            /**
             * Format: int64
             * @description Bytes that belong to this sandbox alone: blocks it wrote, not those it shares
             *     with its image or prebuild.
             */
            own_bytes: number;
        };
        /** @example sk3m9xq2v7pza */
        SandboxId: string;
        SandboxList: {
            /** @description Cursor of the next page, when there may be one. */
            next?: string | null;
            sandboxes: components["schemas"]["Sandbox"][];
        };
        /**
         * @description The state of a sandbox. `Error` carries its reason on the sandbox record.
         * @enum {string}
         */
        SandboxState: "creating" | "starting" | "running" | "paused" | "stopping" | "stopped" | "destroying" | "destroyed" | "error";
        /** @enum {string} */
        SecretKind: "env" | "file";
        /** @description How a stored secret is shown: its name and a masked preview, never its value. */
        SecretView: {
            kind: components["schemas"]["SecretKind"];
            /** @description Env var name, or file path for file secrets. */
            name: string;
            /** @example ••••f3a9 */
            preview: string;
        };
        /** @description Secret values, as sent by the user. */
        SecretsSpec: {
            env?: components["schemas"]["EnvSecret"][];
            files?: components["schemas"]["FileSecret"][];
        };
        ServiceExit: {
            /** Format: int64 */
            at_ms: number;
            /** Format: int32 */
            exit_code?: number | null;
            /** Format: int32 */
            signal?: number | null;
        };
        /** @description A supervised long-running process (dev server, coding agent). */
        ServiceSpec: {
            command: components["schemas"]["CommandLine"];
            cwd?: string | null;
            env?: {
                [key: string]: string;
            };
            restart?: components["schemas"]["RestartPolicy"];
            user?: string | null;
        };
        /** @enum {string} */
        ServiceState: "running" | "backoff" | "stopped" | "exited";
        ServiceStatus: {
            last_exit?: null | components["schemas"]["ServiceExit"];
            name: string;
            /** Format: int32 */
            pid?: number | null;
            /**
             * Format: int32
             * @description How many times the watchdog restarted it.
             */
            restarts: number;
            spec: components["schemas"]["ServiceSpec"];
            /**
             * Format: int64
             * @description When the current (or last) run started, milliseconds since the Unix epoch.
             */
            started_ms?: number | null;
            state: components["schemas"]["ServiceState"];
        };
        SessionTemplate: {
            /** @description What each effort level means. */
            efforts?: {
                [key: string]: components["schemas"]["EffortSettings"];
            };
            name: string;
            /** @description The prompt sent to the agent, with `{{…}}` variables. */
            prompt: string;
            title: string;
        };
        /**
         * @description A directory of the manager's host shared into a sandbox, live: what either side
         *     writes the other sees at once. Only that directory is exposed, nothing above it.
         */
        SharedFolder: {
            /**
             * @description Where the sandbox sees it: an absolute path, not `/` nor under a system
             *     directory (`/proc`, `/sys`, `/dev`, `/run`, `/tmp`, `/etc`, `/usr`, `/bin`…).
             * @example /workspace
             */
            guest_path: string;
            /**
             * @description An existing directory on the manager's host, as an absolute path.
             * @example /srv/app
             */
            host_path: string;
            /** @description Mounted read-only in the sandbox. */
            read_only?: boolean;
        };
        StartPrebuild: {
            /**
             * @description Make this running sandbox of the workspace the prebuild (it ends stopped) instead
             *     of building one from the workspace's settings.
             */
            from_sandbox?: string | null;
        };
        /** @description How clones are made on this host, and how full the filesystem holding them is. */
        StorageInfo: {
            /** @description `reflink`, `qcow2`, `lvm-thin` or `copy`. */
            kind: string;
            /** Format: int64 */
            pool_total_bytes: number;
            /** Format: int64 */
            pool_used_bytes: number;
            /** @description Why this mechanism, and why not the better ones. */
            reason: string;
        };
        SystemInfo: {
            can_pause: boolean;
            data_dir: string;
            /** @description The active hypervisor driver. */
            driver: string;
            /** @description Why this driver was chosen, one line per driver considered. */
            driver_notes: string[];
            /** @description Every usable driver (sandboxes keep the driver that made them). */
            drivers: string[];
            /** @description False when sandboxes are plain host processes (the `local` driver). */
            isolated: boolean;
            sandboxes: components["schemas"]["SandboxCounts"];
            /** Format: int64 */
            schema_version: number;
            /** @description How sandbox disks are cloned, and how full their filesystem is. */
            storage: components["schemas"]["StorageInfo"];
            /** Format: int64 */
            uptime_secs: number;
            version: string;
        };
        /** @description A task as the API shows it. */
        Task: {
            base_branch: string;
            branch: string;
            changes: components["schemas"]["FileChange"][];
            /** Format: date-time */
            created_at: string;
            effort: components["schemas"]["Effort"];
            error?: string | null;
            files_touched: string[];
            id: string;
            /**
             * Format: int32
             * @description Percentage of todos completed (cancelled ones excluded).
             */
            progress?: number | null;
            prompt: string;
            /** @description Calls made through the model proxy (providers with `proxy: true`). */
            proxy_usage: components["schemas"]["ProxyUsage"];
            push?: null | components["schemas"]["PushOutcome"];
            /** @description Clone path of the repo the task works in. */
            repo: string;
            sandbox_id?: null | components["schemas"]["SandboxId"];
            status: components["schemas"]["TaskStatus"];
            summary?: string | null;
            template: string;
            title: string;
            todos: components["schemas"]["TodoItem"][];
            /** Format: date-time */
            updated_at: string;
            usage: components["schemas"]["Usage"];
            workspace_id: components["schemas"]["WorkspaceId"];
        };
        /** @description One agent event of a task, with its position in the task's log. */
        TaskEvent: {
            /** Format: date-time */
            at: string;
            event: Record<string, unknown>;
            /** Format: int64 */
            seq: number;
        };
        /** @description What a user sends to create a task. */
        TaskSpec: {
            /** @description Branch to start from (default: the repo's branch in the workspace). */
            base_branch?: string | null;
            /** @description Queue it right away instead of leaving it in the backlog. */
            dispatch?: boolean;
            effort?: components["schemas"]["Effort"];
            prompt: string;
            /** @description Which of the workspace's repos (its clone path; default: the first). */
            repo?: string | null;
            /** @description Session template (default `implementation`). */
            template?: string | null;
            /** @description Short title; defaults to the prompt's first line. */
            title?: string | null;
            /** @description Workspace id or name. */
            workspace: string;
        };
        /**
         * @description Kanban status. `needs_attention` means an agent waits for a human answer.
         * @enum {string}
         */
        TaskStatus: "backlog" | "queued" | "running" | "needs_attention" | "review" | "done" | "failed" | "cancelled";
        /** @description One item of the agent's todo list. */
        TodoItem: {
            content: string;
            /** @description pending, in_progress, completed or cancelled. */
            status: string;
        };
        /** @description Tokens and money spent. */
        Usage: {
            /** Format: double */
            cost_usd: number;
            /** Format: int64 */
            input_tokens: number;
            /** Format: int64 */
            output_tokens: number;
            /** Format: int64 */
            reasoning_tokens: number;
        };
        /** @description A stored workspace as the API shows it: secrets reduced to names and previews. */
        Workspace: {
            agent_config: Record<string, unknown>;
            base_image: string;
            /** Format: date-time */
            created_at: string;
            dev_commands: components["schemas"]["DevCommand"][];
            id: components["schemas"]["WorkspaceId"];
            image?: null | components["schemas"]["ImageExtension"];
            /** @description The image its sandboxes boot (`base_image`, or the extension's `<base>-ext-<hash>`). */
            image_name: string;
            init_commands: string[];
            name: string;
            prebuild: components["schemas"]["PrebuildSettings"];
            repos: components["schemas"]["RepoSpec"][];
            resources: components["schemas"]["Resources"];
            secrets: components["schemas"]["SecretView"][];
            /** Format: date-time */
            updated_at: string;
        };
        /** @example wk3m9xq2v7pza */
        WorkspaceId: string;
        /** @description A partial update: every field present replaces the stored one; secrets are merged. */
        WorkspacePatch: {
            agent_config?: Record<string, unknown> | null;
            base_image?: string | null;
            dev_commands?: components["schemas"]["DevCommand"][] | null;
            image?: null | components["schemas"]["ImageExtension"];
            init_commands?: string[] | null;
            name?: string | null;
            network?: null | components["schemas"]["NetworkSpec"];
            prebuild?: null | components["schemas"]["PrebuildSettings"];
            /** @description Names of env secrets or paths of file secrets to remove. */
            remove_secrets?: string[] | null;
            repos?: components["schemas"]["RepoSpec"][] | null;
            resources?: null | components["schemas"]["Resources"];
            secrets?: null | components["schemas"]["SecretsSpec"];
        };
        /** @description Everything a user sends to create a workspace. */
        WorkspaceSpec: {
            /**
             * @description Coding-agent configuration: runtime, model and providers, MCP servers, instructions,
             *     exposed secrets, push to origin (see `agent_config::AgentConfig`).
             */
            agent_config?: Record<string, unknown>;
            /**
             * @description Base image sandboxes boot from.
             * @example dev
             */
            base_image?: string;
            /** @description Long-running dev servers, each reachable on its port. */
            dev_commands?: components["schemas"]["DevCommand"][];
            image?: null | components["schemas"]["ImageExtension"];
            /** @description Shell commands run once, in order, when a sandbox (or prebuild) is set up. */
            init_commands?: string[];
            /**
             * @description Unique, human-readable name.
             * @example atelier
             */
            name: string;
            /** @description What its sandboxes may reach: egress policy and host services. */
            network?: components["schemas"]["NetworkSpec"];
            /** @description How the workspace's prebuild is kept fresh. */
            prebuild?: components["schemas"]["PrebuildSettings"];
            repos?: components["schemas"]["RepoSpec"][];
            resources?: components["schemas"]["Resources"];
            /** @description Secrets; write-only: they are never returned, only their names and a masked preview. */
            secrets?: components["schemas"]["SecretsSpec"];
        };
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export type operations = Record<string, never>;
