package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blauth/blauth/ipc"
)

func (a *app) cmdStatus(args []string) int {
	asJSON, code := a.jsonFlag(args)
	if code != exitOK {
		return code
	}
	req, err := a.request(ipc.ActionStatus, a.workspace)
	if err != nil {
		return a.fail(err)
	}
	resp, err := a.call(req, simpleTimeout, true)
	if err != nil {
		return a.fail(err)
	}
	raw := resp.Long(ipc.KeyJSON)
	if asJSON {
		fmt.Fprintln(a.stdout, raw)
		return exitOK
	}
	var st ipc.Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return a.fail(fmt.Errorf("the daemon's status is not valid JSON: %w", err))
	}
	printStatus(a.stdout, &st, time.Now())
	return exitOK
}

// printStatus writes st for people: one line per workspace, then what needs attention.
func printStatus(w io.Writer, st *ipc.Status, now time.Time) {
	fmt.Fprintf(w, "blauthd %s, pid %d, socket %s", st.Version, st.PID, st.Socket)
	if st.Manager != "" {
		fmt.Fprintf(w, " (%s)", st.Manager)
	}
	fmt.Fprintln(w)
	if st.Default != "" {
		fmt.Fprintf(w, "default workspace: %s", st.Default)
		if st.DefaultSource != "" {
			fmt.Fprintf(w, " (chosen by %s)", st.DefaultSource)
		}
		fmt.Fprintln(w)
	}
	if k := st.Keyring; k != nil {
		if k.On {
			fmt.Fprintln(w, "OS keyring: on")
		} else {
			fmt.Fprintf(w, "OS keyring: off: %s\n", k.Off)
		}
	}
	if len(st.SourceErrors) > 0 {
		fmt.Fprintln(w, "\nsources that could not be used:")
		for _, e := range st.SourceErrors {
			fmt.Fprintf(w, "  %s %s: %s\n", e.Source.Kind, e.Source.Where, e.Error)
		}
	}
	fmt.Fprintln(w)
	if len(st.Workspaces) == 0 {
		fmt.Fprintln(w, "no workspace is configured: set BL_WORKSPACE and BL_API_KEY (or BL_CLIENT_CREDENTIALS), run 'bl login', or 'blauth-helper login WORKSPACE'")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKSPACE\tKIND\tSOURCE\tEXPIRES\tLIFETIME\tREFRESHED\tSTATE")
	for _, ws := range st.Workspaces {
		expires := relative(ws.Expiry, now)
		if ws.Expiry.IsZero() && ws.Kind == ipc.KindAPIKey {
			expires = "never"
		}
		life := "-"
		if ws.Lifetime > 0 {
			life = span(time.Duration(ws.Lifetime) * time.Second)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ws.Workspace, cmp.Or(ws.Kind, "-"), cmp.Or(ws.Source, "-"), expires, life, relative(ws.LastRefresh, now), state(ws))
	}
	tw.Flush()
	for _, ws := range st.Workspaces {
		if ws.ClockSkew != 0 {
			d := time.Duration(ws.ClockSkew) * time.Second
			side := "ahead of"
			if d < 0 {
				d, side = -d, "behind"
			}
			if d >= time.Hour {
				d = d.Round(time.Minute) // span shows no seconds past the hour
			}
			fmt.Fprintf(w, "%s: this machine's clock is %s %s the token endpoint's; expiry times are on this machine's clock, corrected for it (fix the clock: bl and the SDKs reading the bl config judge expiry on their own)\n", ws.Workspace, span(d), side)
		}
		if ws.Alert != "" {
			fmt.Fprintf(w, "%s: %s\n", ws.Workspace, strings.TrimPrefix(ws.Alert, "workspace "+ws.Workspace+": "))
		}
		if ws.RefreshTokenRotates != nil && *ws.RefreshTokenRotates {
			fmt.Fprintf(w, "%s: the session's refresh token rotates at each refresh: a long-running process that read the session once fails at its own refresh (use a client library, exec --proxy or exec --restart)\n", ws.Workspace)
		}
		for _, s := range ws.Shadows {
			fmt.Fprintf(w, "%s: also has %s (shadowed)\n", ws.Workspace, s)
		}
		for _, m := range ws.Warnings {
			fmt.Fprintf(w, "%s: %s\n", ws.Workspace, m)
		}
		if ws.WriteBackError != "" {
			fmt.Fprintf(w, "%s: the refreshed session is not saved yet (blauthd retries): %s\n", ws.Workspace, ws.WriteBackError)
		}
	}
}

func state(ws ipc.WorkspaceStatus) string {
	switch {
	case ws.Error != "":
		return ws.Error
	case ws.Refused:
		return "refused: " + ws.LastError
	case ws.LastError != "":
		return "error: " + ws.LastError
	case ws.WriteBackError != "":
		return "ok, not saved"
	}
	return "ok"
}

// relative says when t is from now, as people say it: "just now", "5 s ago", "in 1h12m".
func relative(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	ago := d < 0
	if ago {
		d = -d
	}
	if d < time.Second {
		return "just now"
	}
	if ago {
		return span(d) + " ago"
	}
	return "in " + span(d)
}

// span says how long d is, as people say it: "5 s", "12m05s", "2h00m", "3 days".
func span(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}
