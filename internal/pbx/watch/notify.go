package watch

import (
	"errors"

	"github.com/presencebridge/presencebridge/internal/presence"
)

// read takes one NOTIFY body of s's event package and returns what s says now,
// and whether a refresh must fetch full state (a gap in dialog-info versions).
// A body that cannot be read leaves what s said as it was.
func (s *subscription) read(body []byte) (presence.PBXState, bool, error) {
	if s.event == "dialog" {
		info, err := ParseDialogInfo(body)
		switch {
		case errors.Is(err, ErrNoBody):
			s.dialogs.Clear() // the PBX knows no dialog of the user: idle
		case err != nil:
			return s.line, false, err
		default:
			if _, err := s.dialogs.Apply(info); errors.Is(err, ErrNeedFullState) {
				return s.line, true, nil
			} else if err != nil {
				return s.line, false, err
			}
		}
		return presence.PBXState{Line: s.dialogs.Line(), Calls: s.dialogs.Calls()}, false, nil
	}
	p, err := ParsePIDF(body)
	switch {
	case errors.Is(err, ErrNoBody):
		return presence.PBXState{}, false, nil // nothing published for the user: the PBX says nothing
	case err != nil:
		return s.line, false, err
	}
	return p.State(), false, nil
}
