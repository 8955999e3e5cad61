package ipc

import "errors"

// Exit statuses of blauth-helper and blauth-proxy, by what went wrong: docs/HELPER.md lists
// them, and scripts branch on them. ExitStatus maps an error to one.
const (
	ExitOK          = 0
	ExitError       = 1 // anything not listed below
	ExitUsage       = 2 // bad command line, or a request or setting the daemon answers bad_request
	ExitUnreachable = 3 // no daemon answers (and none could be started)
	ExitNoCreds     = 4 // no workspace or no credential for it, or the caller's .env cannot be read
	ExitAuthFailed  = 5 // the credential was refused: log in again
	ExitUnavailable = 6 // no valid token now; the token endpoint cannot be reached
	ExitKeyring     = 7 // the OS keyring is unavailable
)

// ExitStatus returns the exit status for err: ExitOK for nil, the status of the code of the
// *Error it carries, ExitUsage for a *RequestError, ExitUnreachable when it wraps
// ErrUnreachable, ExitError for anything else.
func ExitStatus(err error) int {
	var e *Error
	var re *RequestError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &e):
		return codeStatus(e.Code)
	case errors.As(err, &re):
		return ExitUsage
	case errors.Is(err, ErrUnreachable):
		return ExitUnreachable
	}
	return ExitError
}

// codeStatus is the exit status for an answer's error code.
func codeStatus(code string) int {
	switch code {
	case CodeNoWorkspace, CodeNoCredentials, CodeBadSource:
		return ExitNoCreds
	case CodeAuthFailed:
		return ExitAuthFailed
	case CodeUnavailable, CodeBusy:
		return ExitUnavailable
	case CodeKeyringUnavailable:
		return ExitKeyring
	case CodeBadRequest:
		return ExitUsage // what was sent, or a setting it came from, is wrong
	}
	return ExitError
}
