// Browser notifications for new asks. Permission is only requested from a click.
export type NotifyState = "unsupported" | "default" | "granted" | "denied";

export function notifyState(): NotifyState {
  if (typeof Notification === "undefined") return "unsupported";
  return Notification.permission as NotifyState;
}

export async function askNotifyPermission(): Promise<NotifyState> {
  if (typeof Notification === "undefined") return "unsupported";
  return (await Notification.requestPermission()) as NotifyState;
}

export function notifyAttention(title: string, taskId: string, onClick: () => void): void {
  if (notifyState() !== "granted") return;
  try {
    const n = new Notification("Atelier needs you", { body: title, tag: `attention-${taskId}` });
    n.onclick = () => {
      window.focus();
      onClick();
      n.close();
    };
  } catch {
    /* some mobile browsers only notify from a service worker: the feed still shows it */
  }
}
