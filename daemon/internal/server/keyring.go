package server

import (
	"context"
	"errors"
	"time"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources/keyring"
)

// serveKeyring stores or removes a workspace's secret in the OS keyring (blauth-helper login and
// logout), then has the keyring re-read, so the next request sees it at once.
func (s *Server) serveKeyring(ctx context.Context, req request) *ipc.Message {
	if s.cfg.Keyring == nil {
		return fail(ipc.CodeKeyringUnavailable, "the OS keyring is off in this blauthd: "+s.keyringOff(), keyringOffHint)
	}
	ws := req.Value(ipc.KeyWorkspace)
	if ws == "" {
		return fail(ipc.CodeBadRequest, "a workspace is required", "blauth-helper login WORKSPACE --api-key")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if req.Value(ipc.KeyAction) == ipc.ActionKeyringSet {
		kind := req.Value(ipc.KeyKind)
		if kind != ipc.KindAPIKey && kind != ipc.KindClientCredentials {
			return fail(ipc.CodeBadRequest, "kind must be api_key or client_credentials", "")
		}
		err = s.cfg.Keyring.Set(ctx, ws, keyring.Secret{Kind: kind, Value: req.Value(ipc.KeySecret)})
	} else {
		err = s.cfg.Keyring.Delete(ctx, ws)
		if errors.Is(err, keyring.ErrNotFound) {
			return fail(ipc.CodeNoCredentials, "the keyring holds no secret for workspace "+ws, "blauth-helper status shows where each workspace's credential comes from")
		}
	}
	if err != nil {
		return errorAnswer(err)
	}
	s.cfg.Resolver.ReloadKeyring(ctx)
	s.log.Info().Str("workspace", ws).Str("action", req.Value(ipc.KeyAction)).Msg("keyring updated")
	return ok(ipc.KeyWorkspace, ws)
}

// keyringOffHint is what to do when a secret cannot be saved because the keyring is off.
const keyringOffHint = "keep the secret where bl and Blaxel's SDKs read it instead: BL_API_KEY or BL_CLIENT_CREDENTIALS in the environment or a project's .env, or `bl login WORKSPACE`; docs/CONFIG.md says how the keyring is turned on"

// keyringOff is why the daemon runs without the keyring.
func (s *Server) keyringOff() string {
	if s.cfg.KeyringOff == "" {
		return "turned off in the daemon's configuration"
	}
	return s.cfg.KeyringOff
}

// keyringStatus is the keyring's line in status.
func (s *Server) keyringStatus() *ipc.KeyringStatus {
	if s.cfg.Keyring != nil {
		return &ipc.KeyringStatus{On: true}
	}
	return &ipc.KeyringStatus{Off: s.keyringOff()}
}
