package hub

import (
	"crypto/sha256"
	"fmt"
)

// Role is an API caller's role. Each role includes the permissions of the ones below it.
type Role string

const (
	RoleViewer   Role = "viewer"   // read bundles, devices, deployments
	RoleOperator Role = "operator" // + upload bundles, accept/reject devices, deploy, cancel, reboot and report commands, read the audit log
	RoleAdmin    Role = "admin"    // + delete bundles
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Allows reports whether r has at least the permissions of need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if r.rank() == 0 {
		return "", fmt.Errorf("role %q: want admin, operator or viewer", s)
	}
	return r, nil
}

// Token is one API token with the name it acts under in the audit log.
type Token struct {
	Name  string `yaml:"name" json:"name"`
	Role  Role   `yaml:"role" json:"role"`
	Token string `yaml:"token" json:"-"`
}

// tokens looks tokens up by their sha256, so lookups do not compare secrets byte by byte.
type tokens map[[32]byte]Token

func newTokens(list []Token) (tokens, error) {
	t := tokens{}
	for i, tk := range list {
		if len(tk.Token) < 16 {
			return nil, fmt.Errorf("api token %d (%s): shorter than 16 characters", i+1, tk.Name)
		}
		if _, err := ParseRole(string(tk.Role)); err != nil {
			return nil, fmt.Errorf("api token %d (%s): %w", i+1, tk.Name, err)
		}
		if tk.Name == "" {
			return nil, fmt.Errorf("api token %d: no name", i+1)
		}
		t[sha256.Sum256([]byte(tk.Token))] = tk
	}
	return t, nil
}

func (t tokens) lookup(secret string) (Token, bool) {
	tk, ok := t[sha256.Sum256([]byte(secret))]
	return tk, ok
}

// Routes is the RBAC table of the HTTP API: the least role each endpoint needs.
// docs/hub.md reproduces it.
var Routes = []struct {
	Pattern string
	Role    Role
}{
	{"GET /api/v1/bundles", RoleViewer},
	{"POST /api/v1/bundles", RoleOperator},
	{"GET /api/v1/bundles/{name}/{version}", RoleViewer},
	{"DELETE /api/v1/bundles/{name}/{version}", RoleAdmin},
	{"GET /api/v1/devices", RoleViewer},
	{"GET /api/v1/devices/{id}", RoleViewer},
	{"POST /api/v1/devices/{id}/accept", RoleOperator},
	{"POST /api/v1/devices/{id}/reject", RoleOperator},
	{"POST /api/v1/devices/{id}/reboot", RoleOperator},
	{"POST /api/v1/devices/{id}/report", RoleOperator},
	{"POST /api/v1/deployments", RoleOperator},
	{"POST /api/v1/deployments/{id}/cancel", RoleOperator},
	{"GET /api/v1/deployments/{id}", RoleViewer},
	{"GET /api/v1/audit", RoleOperator},
}
