package portcullis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	portcullisv1 "github.com/portcullis/portcullis/sdk/go/gen/portcullis/v1"
)

// Error is a failed call: its gRPC code and message, and the details the server attached.
// Every error a Client's call returns for a server answer is an *Error; use errors.As, Code or
// HasReason to inspect it.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the server's human-readable message.
	Message string
	// Reason is google.rpc.ErrorInfo's reason, an ErrorReason value name such as
	// "ERROR_REASON_SESSION_ALREADY_ACTIVE"; empty when the error did not come from Portcullis
	// (a transport failure, a proxy).
	Reason string
	// Metadata is ErrorInfo's metadata (for example the offending id).
	Metadata map[string]string
	// FieldViolations lists the request fields google.rpc.BadRequest names, for INVALID_ARGUMENT.
	FieldViolations []FieldViolation
	// RetryAfter is google.rpc.RetryInfo's delay, when the server says when to try again.
	RetryAfter time.Duration

	status *status.Status
}

// FieldViolation names one bad request field and what is wrong with it.
type FieldViolation struct {
	Field       string
	Description string
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("portcullis: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("portcullis: %s (%s): %s", e.Code, e.Reason, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see through an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// ErrorReason is Reason as the generated enum; ERROR_REASON_UNSPECIFIED when the reason is
// absent or newer than this SDK.
func (e *Error) ErrorReason() portcullisv1.ErrorReason {
	return portcullisv1.ErrorReason(portcullisv1.ErrorReason_value[e.Reason])
}

// Code is the gRPC code of err: codes.OK for nil, codes.Unknown for an error that is not a status.
func Code(err error) codes.Code {
	return status.Code(err)
}

// HasReason reports whether err is an *Error with the given ErrorInfo reason.
func HasReason(err error, reason portcullisv1.ErrorReason) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == reason.String()
}

// fromStatus turns a gRPC status error into an *Error; other errors pass through unchanged.
func fromStatus(err error) error {
	s, ok := status.FromError(err)
	if !ok || s.Code() == codes.OK {
		return err
	}
	e := &Error{Code: s.Code(), Message: s.Message(), status: s}
	for _, detail := range s.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Metadata = d.GetReason(), d.GetMetadata()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.FieldViolations = append(e.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			e.RetryAfter = d.GetRetryDelay().AsDuration()
		}
	}
	return e
}

func unaryErrors(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return fromStatus(invoker(ctx, method, req, reply, cc, opts...))
}

func streamErrors(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	stream, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, fromStatus(err)
	}
	return errorStream{stream}, nil
}

// errorStream converts the errors a stream's messages end with; io.EOF stays the clean end.
type errorStream struct{ grpc.ClientStream }

func (s errorStream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != io.EOF {
		return fromStatus(err)
	}
	return io.EOF
}

func (s errorStream) SendMsg(m any) error {
	if err := s.ClientStream.SendMsg(m); err != io.EOF {
		return fromStatus(err)
	}
	return io.EOF
}
