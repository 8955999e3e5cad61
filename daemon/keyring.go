package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/blauth/blauth/ipc"
	"github.com/blauth/blauth/sources"
)

// keyring stores or removes a workspace's secret in the OS keyring (blauth-helper login and
// logout), then re-reads the keyring so the next request sees it at once.
func (d *Daemon) keyring(ctx context.Context, req *ipc.Message) *ipc.Message {
	if d.cfg.Keyring == nil {
		return fail(ipc.CodeKeyringUnavailable, "this daemon runs without the OS keyring", "start blauthd without --no-keyring")
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
		if kind != sources.KindAPIKey && kind != sources.KindClientCredentials {
			return fail(ipc.CodeBadRequest, "kind must be api_key or client_credentials", "")
		}
		err = d.cfg.Keyring.Set(ctx, ws, sources.KeyringSecret{Kind: kind, Value: req.Value(ipc.KeySecret)})
	} else {
		err = d.cfg.Keyring.Delete(ctx, ws)
	}
	switch {
	case errors.Is(err, sources.ErrKeyringNotFound):
		return fail(ipc.CodeNoCredentials, "the keyring holds no secret for workspace "+ws, "blauth-helper status shows where each workspace's credential comes from")
	case errors.Is(err, sources.ErrKeyringUnavailable):
		return fail(ipc.CodeKeyringUnavailable, err.Error(), "unlock the keyring (a Secret Service such as gnome-keyring must be running), or use BL_API_KEY / bl login instead")
	case err != nil:
		return fail(ipc.CodeBadRequest, err.Error(), "")
	}
	d.resolver.ReloadKeyring(ctx)
	d.prime()
	d.log.Info().Str("workspace", ws).Str("action", req.Value(ipc.KeyAction)).Msg("keyring updated")
	return ok(ipc.KeyWorkspace, ws)
}
