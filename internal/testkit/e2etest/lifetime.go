package e2etest

import "time"

// TokenTTL is the life of the tokens the fake API issues in the end-to-end runs that span
// refreshes and expiries (the long-running SDK processes, the client fleets, the proxy and the
// MCP bridge), and MinTTL the --min-ttl their daemon gets (DaemonMinTTLArgs) and the min_ttl their
// clients ask for. Together they are blauthd's defaults for a 60-second token (a 30 s
// min_ttl) scaled by a third, so every ratio those runs rely on holds as it did: the daemon
// refreshes with 80 % of the life left, long before the TypeScript SDK's own rule (below 50 %
// of exp-iat left) would, and a token is never served with less than half its life left.
//
// 20 s is as short as the behaviour allows: blauth-proxy sends no token with less than 10 s
// left (its default guard), and the daemon's refresh point (16 s left) must stay clear of it by
// more than a slow exchange; shorter tokens would also bring the JWT's whole-second iat and exp
// and the daemon's 1 s tick close to the refresh period itself (4 s).
const (
	TokenTTL = 20 * time.Second
	MinTTL   = TokenTTL / 2
)

// DaemonMinTTLArgs are the blauthd flags for MinTTL. Without them the daemon would keep its 30 s
// default, which TokenTTL tokens can never meet.
func DaemonMinTTLArgs() []string { return []string{"--min-ttl", MinTTL.String()} }

// The daemon's refresh schedule with blauthd's defaults, as daemon/internal/broker draws it:
// refresh when refreshLeft of the life is left (moved earlier by up to refreshJitter of it), and
// no later than when that fraction of the servable life (the life less min_ttl) is left.
const (
	refreshLeft   = 0.6
	refreshJitter = 0.05
)

// RefreshPeriod is the time from a token's issue to the daemon's refresh of it, for tokens of
// lifetime life and a daemon with --min-ttl minTTL: shortest with the most jitter, longest with
// none. It is nominal: whole-second iat and exp, the daemon's 1 s tick and the exchange itself
// move a measured period around it.
func RefreshPeriod(life, minTTL time.Duration) (shortest, longest time.Duration) {
	lead := func(frac float64) time.Duration {
		l := time.Duration(float64(life) * frac)
		if servable := life - minTTL; servable > 0 {
			l = max(l, minTTL+time.Duration(float64(servable)*frac))
		}
		floor := min(max(life/20, time.Second), life)
		return max(min(l, life-floor), 0)
	}
	return life - lead(refreshLeft+refreshJitter), life - lead(refreshLeft)
}
