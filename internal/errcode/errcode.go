// Package errcode carries application error codes from where an error is
// decided to the transport edge. An *Error has a Code and a message that is
// safe to show a user; any other error is "internal" and its text is never
// sent to a client. The one table mapping codes to HTTP and gRPC statuses is
// in this file.
package errcode

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
)

// Code classifies an error for the caller.
type Code string

const (
	Internal        Code = "internal"
	Invalid         Code = "invalid"
	NotFound        Code = "not_found"
	Unauthorized    Code = "unauthorized"
	Forbidden       Code = "forbidden"
	Conflict        Code = "conflict"
	Unavailable     Code = "unavailable"
	TooLarge        Code = "too_large"
	TooManyRequests Code = "too_many_requests"
)

// Error is an error with a code and a user-safe message.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// New returns an *Error with the given code and message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Of returns the code of err: the code of the first *Error in its chain, or
// Internal. A nil error has no code ("").
func Of(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Message returns the user-safe message of err; internal errors get a generic
// text so that nothing unintended leaks.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// Is reports whether err carries code.
func Is(err error, code Code) bool { return Of(err) == code }

type mapping struct {
	http int
	grpc codes.Code
}

// statuses is the only place where codes become transport statuses.
var statuses = map[Code]mapping{
	Internal:        {http.StatusInternalServerError, codes.Internal},
	Invalid:         {http.StatusBadRequest, codes.InvalidArgument},
	NotFound:        {http.StatusNotFound, codes.NotFound},
	Unauthorized:    {http.StatusUnauthorized, codes.Unauthenticated},
	Forbidden:       {http.StatusForbidden, codes.PermissionDenied},
	Conflict:        {http.StatusConflict, codes.FailedPrecondition},
	Unavailable:     {http.StatusServiceUnavailable, codes.Unavailable},
	TooLarge:        {http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	TooManyRequests: {http.StatusTooManyRequests, codes.ResourceExhausted},
}

// HTTPStatus returns the HTTP status for err's code.
func HTTPStatus(err error) int { return statuses[Of(err)].http }

// GRPCCode returns the gRPC status code for err's code.
func GRPCCode(err error) codes.Code { return statuses[Of(err)].grpc }

// FromGRPC maps a gRPC status code back to a Code (the reverse table, for
// clients). ResourceExhausted maps to TooManyRequests.
func FromGRPC(c codes.Code) Code {
	switch c {
	case codes.OK:
		return ""
	case codes.InvalidArgument, codes.OutOfRange:
		return Invalid
	case codes.NotFound:
		return NotFound
	case codes.Unauthenticated:
		return Unauthorized
	case codes.PermissionDenied:
		return Forbidden
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		return Conflict
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return Unavailable
	case codes.ResourceExhausted:
		return TooManyRequests
	}
	return Internal
}

// FromHTTP maps an HTTP status back to a Code (for the CLI).
func FromHTTP(status int) Code {
	for c, m := range statuses {
		if m.http == status {
			return c
		}
	}
	if status >= 500 {
		return Internal
	}
	return Invalid
}
