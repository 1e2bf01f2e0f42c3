import { useCallback, useEffect, useState } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { setUnauthorizedHandler } from "./api/client";
import { clearToken, loadToken, saveToken, scrubTokenFromUrl } from "./api/token";
import { LiveProvider } from "./live/LiveProvider";
import { Login } from "./pages/Login";
import { Shell } from "./Shell";

export function App() {
  const qc = useQueryClient();
  const [token, setToken] = useState<string | null>(loadToken);
  const signOut = useCallback(() => {
    clearToken();
    qc.clear();
    setToken(null);
  }, [qc]);
  useEffect(() => {
    scrubTokenFromUrl();
    setUnauthorizedHandler(signOut);
  }, [signOut]);
  if (!token)
    return (
      <Login
        onToken={(t) => {
          saveToken(t);
          setToken(t);
        }}
      />
    );
  return (
    <LiveProvider onUnauthorized={signOut}>
      <Shell onSignOut={signOut} />
    </LiveProvider>
  );
}
