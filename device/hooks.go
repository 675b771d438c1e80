package device

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Hook directories under HooksConfig.Dir.
const (
	HookPreInstall  = "pre-install.d"
	HookPostInstall = "post-install.d"
	HookPreReboot   = "pre-reboot.d"
	HookPostCommit  = "post-commit.d"
	HookOnRollback  = "on-rollback.d"
)

// ErrHook is wrapped by the error of a hook or check executable that failed.
var ErrHook = errors.New("device: hook failed")

// HookResult is what one executable did.
type HookResult struct {
	Path   string `json:"path"`
	Err    string `json:"error,omitempty"`
	Output string `json:"output,omitempty"` // combined output, the last 4 KiB
}

// maxHookOutput caps the output kept per executable.
const maxHookOutput = 4 << 10

// executables lists the runnable regular files of dir in lexical order,
// skipping hidden files and editor backups. A missing dir has none.
func executables(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents { // ReadDir sorts by name
		n := e.Name()
		if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "~") {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, filepath.Join(dir, n))
	}
	return out, nil
}

// runner runs hook and check executables.
type runner struct {
	cred    *syscall.Credential // nil: run as the daemon's user
	timeout time.Duration
}

// credential looks up an unprivileged user by name or uid. "" means none.
func credential(name string) (*syscall.Credential, error) {
	if name == "" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("look up user %q: %w", name, err)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("look up user %q: non-numeric uid/gid", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// run runs one executable with env added to the daemon's environment.
func (r runner) run(ctx context.Context, path string, env []string) HookResult {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = filepath.Dir(path)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: r.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	res := HookResult{Path: path, Output: out.String()}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %v", r.timeout)
	}
	if err != nil {
		res.Err = err.Error()
	}
	return res
}

// runDir runs every executable of dir in order. With stopOnError the first
// failure ends the run. The error names every executable that failed.
func (r runner) runDir(ctx context.Context, dir string, env []string, stopOnError bool) ([]HookResult, error) {
	paths, err := executables(dir)
	if err != nil {
		return nil, err
	}
	var results []HookResult
	var failed []string
	for _, p := range paths {
		res := r.run(ctx, p, env)
		results = append(results, res)
		if res.Err != "" {
			failed = append(failed, fmt.Sprintf("%s: %s", filepath.Base(p), res.Err))
			if stopOnError {
				break
			}
		}
	}
	if len(failed) > 0 {
		return results, fmt.Errorf("%w: %s: %s", ErrHook, filepath.Base(dir), strings.Join(failed, "; "))
	}
	return results, nil
}

// tailBuffer keeps the last maxHookOutput bytes written to it.
type tailBuffer struct{ b bytes.Buffer }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > maxHookOutput {
		p = p[len(p)-maxHookOutput:]
	}
	t.b.Write(p)
	if extra := t.b.Len() - maxHookOutput; extra > 0 {
		t.b.Next(extra)
	}
	return n, nil
}

func (t *tailBuffer) String() string { return t.b.String() }

// hookEnv is the context given to hooks and checks in the environment.
func hookEnv(hook string, rec *Record, dataDir string) []string {
	env := []string{"AP_HOOK=" + hook, "AP_STATE=" + rec.State.String(), "AP_DATA_DIR=" + dataDir}
	if b := rec.Bundle; b != nil {
		env = append(env, "AP_BUNDLE="+b.Name, "AP_VERSION="+b.Version,
			"AP_SECURITY_VERSION="+strconv.FormatUint(b.SecurityVersion, 10), "AP_DIGEST="+b.Digest)
	}
	if rec.Target != "" {
		env = append(env, "AP_SLOT="+rec.Target)
	}
	if rec.From != "" {
		env = append(env, "AP_FROM_SLOT="+rec.From)
	}
	if rec.Reason != "" {
		env = append(env, "AP_REASON="+rec.Reason)
	}
	var comps []string
	for _, c := range rec.Components {
		comps = append(comps, c.Name+"="+c.Version)
	}
	if len(comps) > 0 {
		env = append(env, "AP_COMPONENTS="+strings.Join(comps, " "))
	}
	return env
}
