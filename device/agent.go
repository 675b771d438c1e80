package device

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/autopatcher/autopatcher/bundle"
	"github.com/autopatcher/autopatcher/slots"
	"github.com/autopatcher/autopatcher/transport"
)

// errCancelled is the cause of a job stopped by the hub's cancel command.
var errCancelled = errors.New("device: cancelled by the hub")

// agentStateName is the agent's record of the newest offer on the data dir.
const agentStateName = "agent.json"

// offerRecord is what the agent persists about the newest offer, so that it
// acts once per offer id across restarts and reports a trial's result after
// the reboot.
type offerRecord struct {
	ID      string    `json:"id"`
	Bundle  string    `json:"bundle"` // NAME@VERSION
	Digest  string    `json:"digest"` // hex sha256 of the signed manifest
	Issued  int64     `json:"issued"`
	Started time.Time `json:"started"`
	Done    bool      `json:"done"` // the final result was reported
	Result  string    `json:"result,omitempty"`
}

// AgentOptions are the parts of an Agent that tests and other platforms replace.
type AgentOptions struct {
	Logger *slog.Logger
	// Version is the daemon version reported in Hello.
	Version string
	// Hostname gives the default device id. Default os.Hostname.
	Hostname func() (string, error)
	// Metrics, when set, counts the connection's messages.
	Metrics *transport.Metrics
	// Progress, when set, is called after every chunk written (fetched or
	// copied from the active slot), on the fetching goroutine.
	Progress func(offer, component string, done, total int)
}

// Agent connects the engine to a hub: it reports the inventory (Hello),
// acts on offers (manifest, Prepare, chunk fetch, Finish, reboot per
// policy), reports every step (Status) and obeys the hub's commands.
type Agent struct {
	e    *Engine
	cfg  HubConfig
	o    AgentOptions
	id   string
	log  *slog.Logger
	tcfg transport.Config

	offers chan *transport.Offer
	cmds   chan *transport.Cmd

	mu        sync.Mutex
	conn      *transport.Conn
	fetch     *transport.Fetcher
	job       string // offer id of the running job
	jobCancel context.CancelCauseFunc
	jobDone   chan struct{}
}

// NewAgent builds the agent of e for cfg; Run connects it.
func NewAgent(e *Engine, cfg HubConfig, o AgentOptions) (*Agent, error) {
	if !cfg.Enabled() {
		return nil, fmt.Errorf("%w: hub.servers is empty", ErrConfig)
	}
	if o.Logger == nil {
		o.Logger = e.log
	}
	if o.Hostname == nil {
		o.Hostname = os.Hostname
	}
	id := cfg.DeviceID
	if id == "" {
		h, err := o.Hostname()
		if err != nil {
			return nil, fmt.Errorf("device id: %w", err)
		}
		id = h
	}
	if err := transport.ValidDevice(id); err != nil {
		return nil, fmt.Errorf("%w: hub.device_id: %v", ErrConfig, err)
	}
	tc := transport.Config{
		Servers: cfg.Servers, ClientID: id, AllowPlain: cfg.AllowPlain,
		KeepAlive: cfg.KeepAlive.D(), SessionExpiry: cfg.SessionExpiry.D(), ConnectTimeout: cfg.ConnectTimeout.D(),
		Logger: o.Logger, Metrics: o.Metrics,
	}
	if cfg.CA != "" || cfg.Cert != "" || cfg.ServerName != "" {
		tc.TLS = &transport.TLSSettings{CA: cfg.CA, Cert: cfg.Cert, Key: cfg.Key, ServerName: cfg.ServerName}
	}
	if cfg.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("read hub.password_file: %w", err)
		}
		tc.Password = []byte(strings.TrimRight(string(pw), "\r\n"))
		tc.Username = cfg.Username
		if tc.Username == "" {
			tc.Username = id
		}
	}
	return &Agent{e: e, cfg: cfg, o: o, id: id, log: o.Logger.With("device", id), tcfg: tc,
		offers: make(chan *transport.Offer, 4), cmds: make(chan *transport.Cmd, 8)}, nil
}

// Run connects (retrying with backoff until ctx ends), then serves the hub
// until ctx ends. A download under way when ctx ends stays persisted and
// resumes at the next Run.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	fetch, err := transport.NewFetcher(conn, a.id, transport.FetchOptions{
		Window: a.cfg.Window, Timeout: a.cfg.ChunkTimeout.D(), MaxRetries: a.cfg.MaxRetries, Logger: a.log})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.conn, a.fetch = conn, fetch
	a.mu.Unlock()
	offerTopic, _ := transport.Topic(a.id, transport.ChOffer)
	cmdTopic, _ := transport.Topic(a.id, transport.ChCmd)
	if err := conn.Subscribe(offerTopic, func(_ string, m transport.Message) {
		if o, ok := m.(*transport.Offer); ok {
			select {
			case a.offers <- o:
			default:
				a.log.Warn("offer queue full; dropping an offer")
			}
		}
	}); err != nil {
		return fmt.Errorf("subscribe offers: %w", err)
	}
	if err := conn.Subscribe(cmdTopic, func(_ string, m transport.Message) {
		if c, ok := m.(*transport.Cmd); ok {
			select {
			case a.cmds <- c:
			default:
				a.log.Warn("command queue full; dropping a command", "op", c.Op)
			}
		}
	}); err != nil {
		return fmt.Errorf("subscribe commands: %w", err)
	}
	a.hello(ctx)
	a.reportResult(ctx)
	a.log.Info("connected to the hub", "servers", strings.Join(a.cfg.Servers, ","))

	up := conn.Reconnected()
	poll := time.NewTicker(a.cfg.Poll.D())
	defer poll.Stop()
	hello := time.NewTicker(max(a.cfg.HelloInterval.D(), time.Second))
	defer hello.Stop()
	defer a.stopJob(context.Canceled)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case o := <-a.offers:
			a.onOffer(ctx, o)
		case c := <-a.cmds:
			a.onCmd(ctx, c)
		case <-poll.C:
			a.reportResult(ctx)
		case <-hello.C:
			a.hello(ctx)
		case <-up:
			// The hub may have restarted or missed what happened while the
			// link was down: tell it the inventory again. The next
			// connection's channel is taken before the Hello, so a reconnect
			// during it is not missed.
			up = conn.Reconnected()
			a.hello(ctx)
		}
	}
}

func (a *Agent) dial(ctx context.Context) (*transport.Conn, error) {
	for n := 0; ; n++ {
		dctx, cancel := context.WithTimeout(ctx, 2*a.cfg.ConnectTimeout.D())
		conn, err := transport.Dial(dctx, a.tcfg)
		cancel()
		if err == nil {
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.log.Warn("connect to the hub", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(transport.Backoff(n, 250*time.Millisecond, 30*time.Second)):
		}
	}
}

func (a *Agent) publish(ctx context.Context, m transport.Message) {
	a.mu.Lock()
	conn := a.conn
	a.mu.Unlock()
	if conn == nil {
		return
	}
	topic, _ := transport.Topic(a.id, transport.ChannelOf(m))
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*a.cfg.ConnectTimeout.D())
	defer cancel()
	if err := conn.Publish(pctx, topic, m); err != nil {
		a.log.Warn("publish", "topic", topic, "err", err)
	}
}

// status publishes one Status about offer rec.
func (a *Agent) status(ctx context.Context, rec *offerRecord, st transport.Status) {
	st.Offer, st.Bundle, st.Time = rec.ID, rec.Bundle, a.e.o.Now().Unix()
	a.log.Info("update status", "offer", rec.ID, "state", st.State, "result", st.Result, "kind", st.Kind, "reason", st.Reason)
	a.publish(ctx, &st)
}

// hello publishes the inventory.
func (a *Agent) hello(ctx context.Context) {
	h, err := a.Inventory()
	if err != nil {
		a.log.Warn("inventory", "err", err)
	}
	a.publish(ctx, h)
}

// Inventory is the Hello the agent publishes.
func (a *Agent) Inventory() (*transport.Hello, error) {
	h := &transport.Hello{Device: a.id, Hardware: a.e.cfg.HardwareID, Daemon: a.o.Version, OfferAge: -1}
	if or, _ := a.loadOffer(); or != nil {
		h.Offer = or.ID
		if or.Issued > 0 {
			h.OfferAge = max(0, a.e.o.Now().Unix()-or.Issued)
		}
	}
	rec, err := a.e.load()
	if err != nil {
		return h, err
	}
	st, err := a.e.status(rec)
	if err != nil && st.State == Idle && st.Booted == "" {
		return h, err
	}
	h.Trial = st.Boot.Trial
	for _, class := range a.e.o.Slots.ClassNames() {
		cl, err := a.e.o.Slots.Class(class)
		if err != nil {
			continue
		}
		for _, s := range []string{cl.A.BootName, cl.B.BootName} {
			si := transport.SlotInfo{Class: class, Name: s, Booted: st.Booted == s, Bad: slices.Contains(st.Boot.Bad, s)}
			if ci, ok := rec.Chunks[class+"/"+s]; ok {
				si.Version = ci.Version
			}
			if si.Version == "" && si.Booted && st.Current != nil {
				si.Version = st.Current.Version
			}
			h.Slots = append(h.Slots, si)
		}
	}
	names := make([]string, 0, len(st.Installed))
	for n := range st.Installed {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		h.Components = append(h.Components, transport.Installed{Name: n, Version: st.Installed[n]})
	}
	if st.Last != nil {
		h.LastResult = resultOf(st.Last.State)
		if h.LastResult != "success" {
			h.LastKind = kindOfReason(st.Last)
		}
	}
	return h, err
}

func resultOf(s State) string {
	switch s {
	case Committed:
		return "success"
	case RolledBack:
		return "rollback"
	case Abandoned, Failed:
		return "failed"
	}
	return ""
}

func kindOfReason(r *Result) transport.ErrorKind {
	switch r.State {
	case RolledBack:
		return transport.KindHealth
	case Abandoned:
		if strings.Contains(r.Reason, "cancelled") {
			return transport.KindCancelled
		}
		return transport.KindStorage
	}
	return transport.KindNone
}

// kindOf maps an error to the stable kind reported to the hub.
func kindOf(err error) transport.ErrorKind {
	switch {
	case errors.Is(err, errCancelled):
		return transport.KindCancelled
	case errors.Is(err, ErrIncompatible), errors.Is(err, ErrSecurityVersion),
		errors.Is(err, ErrDependency), errors.Is(err, ErrCycle):
		return transport.KindIncompat
	case errors.Is(err, ErrExpired):
		return transport.KindExpired
	case errors.Is(err, bundle.ErrSignature), errors.Is(err, bundle.ErrUnknownKey), errors.Is(err, bundle.ErrRevokedKey),
		errors.Is(err, bundle.ErrThreshold), errors.Is(err, bundle.ErrCorruptChunk), errors.Is(err, bundle.ErrMalformed),
		errors.Is(err, bundle.ErrTooLarge), errors.Is(err, transport.ErrCorrupt):
		return transport.KindSignature
	case errors.Is(err, transport.ErrGaveUp), errors.Is(err, context.DeadlineExceeded):
		return transport.KindTimeout
	case errors.Is(err, transport.ErrRefused):
		for _, k := range []transport.ErrorKind{transport.KindNotOffered, transport.KindNotFound, transport.KindBadRequest, transport.KindExpired} {
			if strings.Contains(err.Error(), ": "+string(k)+":") {
				return k
			}
		}
		return transport.KindInternal
	case errors.Is(err, ErrHealth):
		return transport.KindHealth
	case errors.Is(err, ErrVerify), errors.Is(err, ErrShortPayload), errors.Is(err, ErrUnsafePath),
		errors.Is(err, os.ErrPermission), errors.Is(err, ErrHook):
		return transport.KindStorage
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return transport.KindStorage
	}
	return transport.KindInternal
}

// onOffer starts a job for a new offer; repeats of the offer being handled
// or already reported are ignored.
func (a *Agent) onOffer(ctx context.Context, o *transport.Offer) {
	if o.ID == "" {
		// Withdrawn: a download under way for it is no longer wanted.
		a.mu.Lock()
		running := a.job
		a.mu.Unlock()
		if running != "" {
			a.log.Info("offer withdrawn by the hub; stopping its download", "offer", running)
			a.stopJob(errCancelled)
		} else if err := a.e.CancelDownload("", "offer withdrawn by the hub"); err == nil {
			a.log.Info("offer withdrawn by the hub; download abandoned")
		}
		return
	}
	a.mu.Lock()
	running := a.job
	a.mu.Unlock()
	if running == o.ID {
		return
	}
	prev, _ := a.loadOffer()
	if prev != nil && prev.ID == o.ID && prev.Done {
		return
	}
	if prev != nil && prev.ID == o.ID && !prev.Done && a.waitingForBoot() {
		return // installed; the result comes after the reboot
	}
	if running != "" {
		a.log.Info("a new offer supersedes the one under way", "old", running, "new", o.ID)
		a.stopJob(errors.New("superseded by offer " + o.ID))
	}
	rec := &offerRecord{ID: o.ID, Bundle: o.Bundle + "@" + o.Version, Digest: hex.EncodeToString(o.Digest), Issued: o.Issued, Started: a.e.o.Now().UTC()}
	if prev != nil && prev.ID == o.ID {
		rec.Started = prev.Started // resuming
	}
	if err := a.saveOffer(rec); err != nil {
		a.log.Error("save offer", "err", err)
		return
	}
	if o.Expires != 0 && a.e.o.Now().Unix() > o.Expires {
		a.final(ctx, rec, "failed", transport.KindExpired, fmt.Sprintf("offer expired at unix %d", o.Expires))
		return
	}
	jctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	a.mu.Lock()
	a.job, a.jobCancel, a.jobDone = o.ID, cancel, done
	a.mu.Unlock()
	go func() {
		defer close(done)
		defer func() {
			a.mu.Lock()
			if a.job == o.ID {
				a.job, a.jobCancel, a.jobDone = "", nil, nil
			}
			a.mu.Unlock()
		}()
		a.runJob(jctx, o, rec)
	}()
}

// waitingForBoot reports whether the engine holds an installed update
// waiting for its reboot or trial.
func (a *Agent) waitingForBoot() bool {
	st, err := a.e.Status()
	if err != nil {
		return false
	}
	switch st.State {
	case Written, TrySet, Rebooting, Trial, Committing, Failed:
		return true
	}
	return false
}

func (a *Agent) stopJob(cause error) {
	a.mu.Lock()
	cancel, done := a.jobCancel, a.jobDone
	a.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel(cause)
	<-done
}

// final reports the end of offer rec and remembers it.
func (a *Agent) final(ctx context.Context, rec *offerRecord, result string, kind transport.ErrorKind, reason string) {
	state := result
	switch result {
	case "success":
		state = Committed.String()
	case "rollback":
		state = RolledBack.String()
	}
	a.status(ctx, rec, transport.Status{State: state, Result: result, Kind: kind, Reason: reason})
	rec.Done, rec.Result = true, result
	if err := a.saveOffer(rec); err != nil {
		a.log.Error("save offer", "err", err)
	}
	a.hello(ctx)
}

// runJob downloads, installs and (per policy) reboots into offer o.
func (a *Agent) runJob(ctx context.Context, o *transport.Offer, rec *offerRecord) {
	fail := func(err error) {
		if cause := context.Cause(ctx); ctx.Err() != nil && !errors.Is(cause, errCancelled) {
			a.log.Info("update paused", "offer", o.ID, "cause", cause)
			return // shutting down or superseded: the download resumes later
		}
		if ctx.Err() != nil {
			err = errCancelled
		}
		if cerr := a.e.CancelDownload(o.ID, err.Error()); cerr != nil && !errors.Is(cerr, ErrNoDownload) {
			a.log.Warn("abandon download", "err", cerr)
		}
		a.final(context.WithoutCancel(ctx), rec, "failed", kindOf(err), err.Error())
	}
	a.status(ctx, rec, transport.Status{State: Downloading.String()})
	a.mu.Lock()
	fetch := a.fetch
	a.mu.Unlock()
	signed, err := a.retry(ctx, func() ([]byte, error) { return fetch.Manifest(ctx, o) })
	if err != nil {
		fail(err)
		return
	}
	// The offer's reboot policy applies unless the device's own is stricter
	// (a maintenance window or the hub's word configured on the device).
	var reboot *RebootPlan
	if a.e.cfg.Reboot.Policy == RebootNow {
		reboot = rebootPlan(o.Policy)
	}
	d, err := a.e.Prepare(ctx, signed, DownloadOptions{Offer: o.ID, Reboot: reboot, NoAdvance: true})
	if err != nil {
		fail(err)
		return
	}
	if d.AlreadyInstalled() {
		a.final(ctx, rec, "success", transport.KindNone, "already installed")
		return
	}
	m := d.Manifest()
	for _, i := range d.Components() {
		c := &m.Components[i]
		pr := &progressCounter{d: d, comp: i, every: a.cfg.ProgressEvery, fn: func(done, total int) {
			a.status(ctx, rec, transport.Status{State: Downloading.String(), Component: c.Name, Done: uint32(done), Total: uint32(total)})
		}}
		if a.o.Progress != nil {
			pr.each = func(done, total int) { a.o.Progress(o.ID, c.Name, done, total) }
		}
		req := transport.Request{Offer: o.ID, Digest: o.Digest, Index: i, Comp: c, Sink: d.Sink(i), Done: pr}
		if l := d.Local(i); l != nil {
			req.Local = l
		}
		_, err := a.retry(ctx, func() ([]byte, error) {
			err := fetch.Fetch(ctx, req)
			if serr := d.Sync(); err == nil {
				err = serr
			}
			return nil, err
		})
		if err != nil {
			d.Close()
			fail(err)
			return
		}
		done, total := d.Count(i)
		a.status(ctx, rec, transport.Status{State: Downloading.String(), Component: c.Name, Done: uint32(done), Total: uint32(total)})
	}
	delta := d.Stats().String()
	if o.Policy.DownloadOnly {
		d.Close()
		a.log.Info("downloaded; installing waits for a later offer", "offer", o.ID, "delta", delta)
		a.status(ctx, rec, transport.Status{State: Downloading.String(), Reason: delta})
		return
	}
	a.status(ctx, rec, transport.Status{State: "installing", Reason: delta})
	if _, err := d.Finish(ctx); err != nil {
		fail(err)
		return
	}
	a.advance(ctx, rec)
}

// advance continues an installed update: a bundle without images commits
// at once; otherwise the engine tries the slot and reboots per policy.
func (a *Agent) advance(ctx context.Context, rec *offerRecord) {
	// The reboot is announced when the update has a slot to boot, its
	// policy reboots at once and the bootloader state reads.
	if er, err := a.e.load(); err == nil && er.Target != "" {
		policy := a.e.cfg.Reboot.Policy
		if er.Reboot != nil {
			policy = er.Reboot.Policy
		}
		if policy == RebootNow {
			if _, err := a.e.o.Bootloader.State(); err == nil {
				a.status(ctx, rec, transport.Status{State: StatusRebooting})
			}
		}
	}
	status, err := a.e.Resume(ctx)
	if err != nil {
		a.final(context.WithoutCancel(ctx), rec, "failed", kindOf(err), err.Error())
		return
	}
	switch status {
	case StatusWaitingHub, StatusWaitingWindow:
		a.status(ctx, rec, transport.Status{State: status})
	}
	a.reportResult(ctx)
}

// retry runs fn until it succeeds, fails for good, or ctx ends; giving up
// for lack of answers (the hub or broker away) is retried with backoff.
func (a *Agent) retry(ctx context.Context, fn func() ([]byte, error)) ([]byte, error) {
	for n := 0; ; n++ {
		b, err := fn()
		if err == nil || !errors.Is(err, transport.ErrGaveUp) || ctx.Err() != nil {
			return b, err
		}
		a.log.Warn("no answer from the hub; trying again", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(transport.Backoff(n, time.Second, time.Minute)):
		}
	}
}

func rebootPlan(p transport.Policy) *RebootPlan {
	switch p.Reboot {
	case transport.RebootNow, transport.RebootHub:
		return &RebootPlan{Policy: p.Reboot}
	case transport.RebootWindow:
		if p.Window == "" {
			return nil // the device's own window
		}
		return &RebootPlan{Policy: RebootWindow, Window: p.WindowSpec()}
	}
	return nil
}

// reportResult reports the outcome of the newest offer once the engine has
// one (after the reboot and trial, or a rollback).
func (a *Agent) reportResult(ctx context.Context) {
	a.mu.Lock()
	running := a.job != ""
	a.mu.Unlock()
	rec, err := a.loadOffer()
	if err != nil || rec == nil || rec.Done || running {
		return
	}
	st, err := a.e.Status()
	if err != nil || st.Bundle != nil || st.Last == nil || st.Last.Bundle.Digest != rec.Digest || st.Last.Time.Before(rec.Started.Add(-time.Second)) {
		return
	}
	res := resultOf(st.Last.State)
	if res == "" {
		return
	}
	kind := transport.KindNone
	if res != "success" {
		kind = kindOfReason(st.Last)
	}
	a.final(ctx, rec, res, kind, st.Last.Reason)
}

// onCmd obeys a hub command.
func (a *Agent) onCmd(ctx context.Context, c *transport.Cmd) {
	a.log.Info("hub command", "op", c.Op, "id", c.ID, "offer", c.Offer)
	rec, _ := a.loadOffer()
	if rec == nil {
		rec = &offerRecord{ID: c.Offer}
	}
	switch c.Op {
	case transport.CmdReport:
		a.hello(ctx)
	case transport.CmdReboot:
		st, err := a.e.Status()
		if err != nil || st.State != Rebooting {
			a.log.Warn("reboot command without an update waiting for it", "state", st.State)
			return
		}
		a.status(ctx, rec, transport.Status{State: StatusRebooting, Reason: "cmd " + c.ID})
		if err := a.e.RebootNow(ctx); err != nil {
			a.log.Error("reboot", "err", err)
		}
	case transport.CmdCancel:
		a.mu.Lock()
		job := a.job
		a.mu.Unlock()
		if job != "" && (c.Offer == "" || c.Offer == job) {
			// The job may already have installed the update: it reports
			// "waiting-reboot" before its goroutine ends. Stopping it is
			// not enough then; the installed update is abandoned below.
			a.stopJob(errCancelled)
			if r, _ := a.loadOffer(); r != nil {
				rec = r // the job may have reported its end already
			}
		}
		if c.Offer != "" && rec.ID != c.Offer {
			return
		}
		if st, err := a.e.Status(); err == nil && (st.State == Written || st.State == TrySet || st.State == Rebooting || st.State == Downloading) {
			if _, err := a.e.Rollback(ctx); err != nil {
				a.log.Warn("cancel", "err", err)
				return
			}
			if !rec.Done && rec.ID != "" {
				a.final(ctx, rec, "failed", transport.KindCancelled, "cancelled by the hub (cmd "+c.ID+")")
			}
		}
	default:
		a.log.Warn("unknown hub command", "op", c.Op)
	}
}

func (a *Agent) loadOffer() (*offerRecord, error) {
	b, err := os.ReadFile(filepath.Join(a.e.cfg.DataDir, agentStateName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r offerRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read %s: %w", agentStateName, err)
	}
	return &r, nil
}

func (a *Agent) saveOffer(r *offerRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.e.cfg.DataDir, 0o700); err != nil {
		return err
	}
	if err := slots.ReplaceFile(filepath.Join(a.e.cfg.DataDir, agentStateName), b, 0o600, nil); err != nil {
		return fmt.Errorf("save %s: %w", agentStateName, err)
	}
	return nil
}

// progressCounter passes the Fetcher's progress to a Download and reports
// every `every` chunks.
type progressCounter struct {
	d     *Download
	comp  int
	every int
	n     int
	fn    func(done, total int)
	each  func(done, total int)
}

func (p *progressCounter) Done(comp, idx int) bool { return p.d.Done(comp, idx) }

func (p *progressCounter) MarkDone(comp, idx int) error {
	if err := p.d.MarkDone(comp, idx); err != nil {
		return err
	}
	p.n++
	if p.each != nil {
		p.each(p.d.Count(comp))
	}
	if p.n%p.every == 0 {
		p.fn(p.d.Count(comp))
	}
	return nil
}
