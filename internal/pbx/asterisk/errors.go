package asterisk

import "github.com/presencebridge/presencebridge/internal/delivery"

// Error is a failure talking to Asterisk, with the fix a field engineer
// applies: what was asked (Op), what went wrong (Cause) and what to do (Fix,
// empty when there is nothing to change, e.g. Asterisk restarting). `verify`
// shows Cause and Fix apart; logs and status show Error().
type Error struct {
	Op    string // "PUT http://pbx:8088/ari/deviceStates/Stasis:teams-1000", "AMI pbx:5038: Setvar"
	Cause string
	Fix   string
	kind  error // delivery.ErrTargetDown, or nil
}

func (e *Error) Error() string {
	s := e.Op + ": " + e.Cause
	if e.Fix != "" {
		s += "; " + e.Fix
	}
	return s
}

// Unwrap makes errors.Is(err, delivery.ErrTargetDown) true for a failure
// that holds for every user (unreachable, credentials refused).
func (e *Error) Unwrap() error { return e.kind }

// down is a failure of the whole target: the dispatcher backs off.
func down(op, cause, fix string) error {
	return &Error{Op: op, Cause: cause, Fix: fix, kind: delivery.ErrTargetDown}
}

// failed is a failure worth trying again for this user.
func failed(op, cause, fix string) error { return &Error{Op: op, Cause: cause, Fix: fix} }

// refused is a state or device Asterisk will never take as it is: dropped
// until the user's state changes.
func refused(op, cause, fix string) error {
	return &delivery.PermanentError{Err: &Error{Op: op, Cause: cause, Fix: fix}}
}
