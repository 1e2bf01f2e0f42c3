-- Host folders shared into a sandbox (JSON list of {host_path, guest_path, read_only}),
-- kept so that every start shares them again.
ALTER TABLE sandboxes ADD COLUMN shared_folders TEXT NOT NULL DEFAULT '[]';
