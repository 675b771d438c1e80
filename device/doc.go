// Package device is AutoPatcher's on-device update engine, run by the
// autopatchd daemon. It turns a verified bundle into a committed A/B slot
// or a clean rollback, and survives a power cut at any instant.
//
// # State machine
//
// An update moves through these states (type State); each is persisted
// before the step that follows it:
//
//		idle ─Install─▶ verifying ─▶ writing ─▶ written ─▶ try-set ─▶ rebooting
//		idle ─Prepare─▶ downloading ─Finish────────┘
//		                  │ bad bundle: error, nothing changed          │ (policy: now | window | hub)
//		                  ▼                                             ▼ boot
//		               abandoned ◀─ interrupted / cancelled          trial ─▶ committing ─▶ committed
//		                                                               │ checks fail
//		                                                               ▼
//		                          rolled-back ◀─ boot of the old slot ─ failed (mark bad, reboot)
//
//	  - verifying: bundle.Open checks the signatures with the trust store
//	    before the manifest is decoded; then the hardware id, the expiry, the
//	    security version against the anti-rollback counter, the bundle's
//	    requires and every component's depends (semver) against the installed
//	    versions. The components are ordered so that each comes after the
//	    components of the bundle it depends on (a cycle or a missing
//	    dependency is an error before anything is written). A dry run stops
//	    here, after reading and verifying every chunk, and returns the plan.
//	  - writing: the components are written in that order. Images go into
//	    the inactive slot of their class (never the booted one), packages
//	    (tar) are unpacked into a new version directory
//	    <packages>/<path>/<version>-<sha8>/ (at commit <packages>/<path>/current
//	    switches to it, and an absolute path such as /opt/app becomes a
//	    symlink to that link unless something else lives there), files are
//	    written next to their target as <path>.ap-new. A package or file
//	    identical to the installed one (same version and sha256: the package's
//	    current version dir, the file's bytes) is planned as unchanged and not
//	    written, fetched or switched; it stays current whatever the outcome.
//	    Progress is tracked in install.json, not in
//	    state.json, so a bundle found bad midway (a corrupt chunk) leaves
//	    state.json untouched; what it staged is removed.
//	  - written: everything is fsynced and, where configured, read back
//	    from the medium while later ranges are still written, every chunk
//	    compared with its sha256 in the signed chunk table (the chunks cover
//	    the payload back to back, so this proves every byte; the hashing is
//	    spread over the cores, and a mismatch names the chunk and its
//	    offset). state.json takes over.
//	  - try-set: the bootloader tries the target slot once on the next boot
//	    (one Try for the whole bundle: every image targets the same boot name).
//	    A try the bootloader refuses (no other bootable slot to fall back to)
//	    ends the update as abandoned, with the bootloader's error as reason.
//	  - rebooting: pre-reboot.d hooks, then the reboot, now or when the
//	    maintenance window opens or when the hub says so (RebootNow).
//	  - trial: booted on the target slot. The watchdog (/dev/watchdog, or
//	    systemd's when WATCHDOG_USEC is set) is petted while the health checks
//	    run within health.deadline.
//	  - committing: the bootloader commits the slot, package current links
//	    and staged files are switched, the anti-rollback counter is raised,
//	    installed versions and the chunk index of the slot are recorded;
//	    then post-commit.d. Every part is idempotent, so a commit cut short by
//	    a power loss is redone at the next start.
//	  - failed: a check failed (or the operator said mark-bad): the slot is
//	    marked bad, on-rollback.d runs, the device reboots into the old slot.
//	  - rolled-back: booted on the old slot while a trial was under way
//	    (hang, crash, watchdog reset, failed checks, power loss before the
//	    commit): staged packages and files are removed, the reason recorded.
//
// A bundle whose components are all packages or files needs no reboot: it
// goes from written straight to committing. One bundle is one transaction:
// its images, packages and files commit or roll back together. Installing
// the committed bundle again is a no-op ("already-installed"). At most 64
// steps are taken per bundle; a runaway update is failed or abandoned.
//
// # Persisted state
//
// <data_dir>/state.json (Record) holds the state, the bundle under way
// (name, version, security version, sha256 of the signed manifest), the
// target and previous slot, per-component progress, the anti-rollback
// counter, the installed component versions, the chunk index of every slot
// the engine installed (ChunkIndex, for delta transfers), and the last
// result with its reason. It is replaced atomically: state.json.tmp,
// fsync, the old file hard-linked to state.json.prev (copied instead,
// through a fsynced temp file, where the file system has no hard links, so
// the data dir may live on FAT), rename, fsync of the directory. A state.json that does not parse is reported (ErrCorruptState)
// and the previous copy is used. <data_dir>/boot-confirmed holds the boot
// id of the last confirmed boot: once per boot, the running slot, when it is
// the bootloader's primary with no try pending and not the trial of the
// update under way, is committed again, refilling its boot tries. The
// daemon does it at start (ConfirmBoot), and Install, Prepare and the
// bootloader try do it first in the same lock, whichever runs first; after
// a rollback the slot the device is back on is confirmed at once.
// <data_dir>/install.json is the journal of
// a write in progress; <data_dir>/lock serialises the daemon and the
// command line.
//
// # Configuration (device.yaml)
//
// Every field, with its default:
//
//	data_dir: /var/lib/autopatcher       # state.json, install.json, packages/
//	slots: /etc/autopatcher/slots.yaml   # slot and bootloader config (slots.LoadConfig)
//	hardware_id: ""                      # must appear in a bundle's compatible list (required)
//	file_root: /                         # file components are installed below this root
//	packages: ""                         # package dir; "" = <data_dir>/packages
//	installed: {}                        # versions present in the factory image, e.g. {base: 1.0.0}
//	trust:
//	  keys: [/etc/autopatcher/keys/vendor.pub]  # PEM public keys (Ed25519 or P-256)
//	  threshold: 1                       # distinct trusted signatures required
//	  revoked: []                        # key ids that no longer count
//	health:
//	  deadline: 5m                       # all checks must pass within this, else rollback
//	  dir: /etc/autopatcher/health.d     # executables, run in lexical order
//	  timeout: 30s                       # per executable (and default per HTTP check)
//	  http: []                           # [{url: http://127.0.0.1:8080/health, status: 200, timeout: 30s}]
//	  units: []                          # systemd units that must be active
//	  systemctl: systemctl               # the systemctl binary
//	  min_uptime: 0s                     # the trial must have been up this long
//	  uptime_file: /proc/uptime
//	watchdog:
//	  device: /dev/watchdog              # "" = none
//	  timeout: 60s                       # set with WDIOC_SETTIMEOUT; petted every timeout/3
//	  systemd: null                      # null = systemd's watchdog when WATCHDOG_USEC is set; true/false forces
//	hooks:
//	  dir: /etc/autopatcher/hooks        # pre-install.d post-install.d pre-reboot.d post-commit.d on-rollback.d
//	  timeout: 60s                       # per hook
//	reboot:
//	  policy: now                        # now | window | hub
//	  window: ""                         # "02:00-04:00", "sat,sun 01:00-05:00" or cron-like "0 3 * * 1-5 2h"
//	  time_zone: Local                   # IANA zone of the window
//	  command: [systemctl, reboot]
//	verify: auto                         # read-back after writing: auto (per slot, on for block devices) | on | off
//	install:
//	  url_allowlist: []                  # hosts that `install http://...` may fetch from
//	  timeout: 30m
//	user: ""                             # run hooks and health checks as this user (name or uid)
//	self_update:
//	  binary: ""                         # path of autopatchd when installed as a file (e.g. /usr/bin/autopatchd); "" = off
//	  deadline: 2m                       # the new binary's self-check, and its confirmation after the restart
//	capabilities: [chown, dac_override, dac_read_search, fowner, fsetid, kill, setgid, setuid, sys_admin, sys_boot, sys_rawio]
//	                                     # what `autopatchd run` keeps when started as root on Linux (every other
//	                                     # capability leaves the bounding set; no_new_privs is set); [all] = keep all
//	hub:                                 # no servers: no hub (updates only from files)
//	  servers: []                        # [mqtts://hub.example.com:8883]; mqtt:// only with allow_plain
//	  device_id: ""                      # MQTT client id and topic name; "" = the hostname
//	  ca: ""                             # PEM CA of the broker's certificate; "" = system roots
//	  cert: ""                           # client certificate and key (mTLS, the device identity)
//	  key: ""
//	  server_name: ""                    # name checked in the broker's certificate; "" = the URL's host
//	  username: ""                       # per-device credential instead of a certificate; "" = device_id
//	  password_file: ""                  # file holding its password ("" = no credential)
//	  allow_plain: false                 # permit unencrypted mqtt:// servers
//	  keep_alive: 30s
//	  session_expiry: 24h                # persistent session: what the hub sent while away is delivered
//	  connect_timeout: 10s
//	  window: 16                         # chunks outstanding per download, 1..256
//	  chunk_timeout: 10s                 # re-request outstanding chunks after this long without data
//	  max_retries: 32                    # re-requests before the fetch pauses and retries with backoff
//	  progress_every: 64                 # Status with chunk progress every N chunks
//	  poll: 2s                           # how often the result of a trial is looked for, to report it
//	  hello_interval: 15m                # inventory re-sent this often, and after every result
//
// Durations are Go durations ("90s", "5m") or plain seconds.
//
// # Hooks and health checks
//
// Hooks are executables in the hook directories, run in lexical order
// (hidden files and names ending in ~ are skipped) with a timeout, in their
// own process group, optionally as the configured user. They get the
// context in the environment: AP_HOOK, AP_STATE, AP_DATA_DIR, AP_BUNDLE,
// AP_VERSION, AP_SECURITY_VERSION, AP_DIGEST, AP_SLOT (target), AP_FROM_SLOT,
// AP_REASON (on rollback), AP_COMPONENTS ("name=version ..."). A failing
// pre-install hook aborts the install before anything is written; the
// others are logged. Health-check executables get the same variables with
// AP_HOOK=health; checks are retried every 2s until all pass or the
// deadline ends, and the last failure, naming the check, is the reason of
// the rollback.
//
// # Self-update
//
// When autopatchd is installed as a file rather than inside the A/B image,
// a bundle updates it with a file component whose path is
// self_update.binary: the new binary is written beside the old one and
// must pass "self-check" before the install counts as written; at commit
// the old one is kept as <binary>.ap-old and the new one renamed over it;
// the daemon re-executes itself, and the new process confirms itself at
// start (removing the old copy) if it comes up within the deadline, or
// restores the old binary. If it never comes up, the systemd unit's
// ExecStopPost puts <binary>.ap-old back before the restart.
//
// # Hub agent and chunk downloads
//
// With hub.servers set, `autopatchd run` also runs an Agent: it connects
// with a persistent MQTT session (package transport), publishes Hello (the
// inventory: hardware id, daemon version, slots and their versions,
// installed components, trial slot, last result, age of the newest offer)
// and subscribes to its offer and cmd topics. On an Offer it acts once per
// offer id (<data_dir>/agent.json remembers the newest one and whether its
// result was reported), refuses an expired one, and then:
//
//	Fetcher.Manifest ─▶ Engine.Prepare ─▶ Fetcher.Fetch per component ─▶ Download.Finish ─▶ Resume (try, reboot per policy)
//
// Prepare verifies the signed manifest with the trust store before decoding
// it, makes every check Install makes, and persists state downloading with
// the offer id. Each component gets a sink: an image goes straight into the
// inactive slot (slots.OpenTarget), a package or file into a staging file
// <data_dir>/download/<index>.part. Chunks arrive verified (the Fetcher
// checks each against the signed chunk table and decompresses zstd) and are
// written at their offset; which are done is kept in
// <data_dir>/download/<index>.bits, persisted every 64 chunks and at the
// end of every fetch, always after an fsync of the data it claims (a power
// cut costs at most those 64 chunks and the window in flight again). A
// resumed download (same bundle, after a disconnect, a daemon restart or a
// reboot) asks only for the chunks not marked. Image chunks whose hash the
// chunk index of the active slot lists are copied from it (delta) and
// checked. When the download is complete, how many chunks and bytes were
// fetched and how many copied (Download.Stats, e.g. "fetched 1 of 64 chunks
// (34 KiB), 63 copied from slot A") is logged, given as the reason of the
// installing Status, and kept in <data_dir>/last-download.json for
// Status.Download (`autopatchd status`). Finish reads every component back and compares its sha256,
// unpacks packages and stages files from the staging files, and continues
// as an Install after writing. The agent publishes Status at every step:
// downloading (with chunk progress every progress_every chunks),
// installing, rebooting (or waiting-hub / waiting-window: the offer's reboot
// policy applies when reboot.policy is now; a window or hub policy
// configured on the device wins), then committed,
// rolled-back or failed with a stable error kind and the reason; a trial's
// result is reported when the daemon is back after the reboot. Commands:
// reboot (policy hub), cancel (abandons the download, or the installed
// update before its reboot), report (a fresh Hello). An offer withdrawn by
// the hub (empty id) abandons a download of it that is under way.
//
// # Data path
//
// Install reads the bundle file at the chunk offsets of bundle.Layout: a
// reader goroutine, verify goroutines (sha256 and zstd per chunk, one per
// CPU, results kept in chunk order) and the writer overlap, with at most
// eight chunk buffers in flight, so memory does not grow with the image.
// Writeback of each 8 MiB written is started at once and waited for on
// another goroutine, so the medium stays busy and the page cache holds
// little dirty data. Input that cannot be read at random offsets (stdin, a
// URL) is first spooled to the data dir.
package device
