import { useMutation, useQueryClient } from "@tanstack/react-query";
import { post } from "../api/client";
import { useImages, useSystem } from "../api/queries";
import type { ImageView } from "../api/types";
import { duration, ErrorNote, Loading, Section } from "../ui/kit";

function Images() {
  const qc = useQueryClient();
  const images = useImages();
  const build = useMutation({
    mutationFn: (name: string) => post<ImageView>(`/images/${encodeURIComponent(name)}/build`),
    onSettled: () => qc.invalidateQueries({ queryKey: ["images"] }),
  });
  if (images.isLoading) return <Loading />;
  return (
    <>
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              <th>Image</th>
              <th>Built</th>
              <th>Kernel</th>
              <th>Size</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {images.data?.map((i) => (
              <tr key={i.name}>
                <td>{i.name}</td>
                <td>{i.built ? new Date(i.built_at_ms ?? 0).toLocaleString() : "not yet"}</td>
                <td>{i.kernel_version ?? "—"}</td>
                <td>{i.rootfs_bytes ? `${Math.round(i.rootfs_bytes / 1048576)} MiB` : "—"}</td>
                <td>
                  <button
                    className="outline small-button"
                    aria-busy={build.isPending && build.variables === i.name}
                    disabled={build.isPending}
                    onClick={() => build.mutate(i.name)}
                  >
                    {i.built ? "Rebuild" : "Build"}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ErrorNote error={images.error ?? build.error} />
    </>
  );
}

export function System() {
  const system = useSystem();
  const s = system.data;
  return (
    <>
      <h1>System</h1>
      <ErrorNote error={system.error} />
      {!s ? (
        <Loading />
      ) : (
        <>
          {!s.isolated && (
            <p className="warning">
              The <strong>{s.driver}</strong> driver gives no isolation: sandboxes are plain processes on this host. Use it for development only.
            </p>
          )}
          <dl className="facts">
            <dt>Driver</dt>
            <dd data-testid="driver">{s.driver}</dd>
            <dt>Usable drivers</dt>
            <dd>{s.drivers.join(", ")}</dd>
            <dt>Why</dt>
            <dd>
              <ul className="plain">
                {s.driver_notes.map((n) => (
                  <li key={n}>{n}</li>
                ))}
              </ul>
            </dd>
            <dt>Pause</dt>
            <dd>{s.can_pause ? "supported" : "not supported"}</dd>
            <dt>Sandboxes</dt>
            <dd>
              {Object.entries(s.sandboxes)
                .map(([k, v]) => `${v} ${k}`)
                .join(" · ")}
            </dd>
            <dt>Version</dt>
            <dd>
              {s.version} (schema {s.schema_version})
            </dd>
            <dt>Uptime</dt>
            <dd>{duration(s.uptime_secs)}</dd>
            <dt>Data</dt>
            <dd>
              <code>{s.data_dir}</code>
            </dd>
          </dl>
          <Section title="Images">
            <Images />
          </Section>
        </>
      )}
    </>
  );
}
