import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// `npm run dev` proxies the API to a manager (ATELIER_URL, default http://127.0.0.1:4000).
const manager = process.env.ATELIER_URL ?? "http://127.0.0.1:4000";

export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/api": { target: manager, ws: true } } },
  build: { target: "es2022", sourcemap: false, chunkSizeWarningLimit: 400 },
  test: {
    environment: "jsdom",
    globals: true,
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
  },
});
