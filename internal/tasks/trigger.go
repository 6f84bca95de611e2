package tasks

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mamori/mamori/internal/errcode"
)

// Kind is when a trigger fires.
type Kind string

// Trigger kinds.
const (
	ASAP          Kind = "asap"                 // once, now (runs expire after Expiry)
	Once          Kind = "once"                 // once, at At (RFC 3339)
	Daily         Kind = "daily"                // every day at At ("HH:MM")
	Weekly        Kind = "weekly"               // on Weekdays at At
	Monthly       Kind = "monthly"              // on DayOfMonth, or the Nth weekday, at At
	Yearly        Kind = "yearly"               // on Month/DayOfMonth at At
	Cron          Kind = "cron"                 // a cron expression (5 fields)
	JoinedDynamic Kind = "joined_dynamic_group" // a computer joined DynamicGroupID: run on it
	OnEvent       Kind = "event"                // Event happened on a computer: run on it
	ServerStarted Kind = "server_started"       // the server started
)

// Events an event trigger can follow. detection_found is a new detection:
// the same file found again while its detection is unresolved is counted on
// it and causes nothing.
var Events = []string{"detection_found", "agent_connected", "task_failed"}

// NthWeekday is "the 2nd Monday" (N 1..5) or "the last Friday" (N -1).
type NthWeekday struct {
	N       int    `json:"n"`
	Weekday string `json:"weekday"`
}

// Window is a daily time window ("22:00" to "06:00" crosses midnight).
type Window struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// NWithin fires when N occurrences happened within Period.
type NWithin struct {
	N      int    `json:"n"`
	Period string `json:"period"`
}

// Throttle limits how often a trigger actually starts the task: all set
// conditions must hold (DOMAIN.md, Tasks and triggers).
type Throttle struct {
	Window   *Window  `json:"window,omitempty"`    // only within this daily window
	OncePer  string   `json:"once_per,omitempty"`  // at most once per period
	EveryNth int      `json:"every_nth,omitempty"` // only every Nth occurrence
	NWithin  *NWithin `json:"n_within,omitempty"`  // only when N occurrences happened within a period
}

// Trigger says when a task runs.
type Trigger struct {
	Kind           Kind        `json:"kind"`
	At             string      `json:"at,omitempty"`
	TimeZone       string      `json:"time_zone,omitempty"` // IANA name; default UTC
	Weekdays       []string    `json:"weekdays,omitempty"`  // mon tue wed thu fri sat sun
	DayOfMonth     int         `json:"day_of_month,omitempty"`
	NthWeekday     *NthWeekday `json:"nth_weekday,omitempty"`
	Month          int         `json:"month,omitempty"`
	Cron           string      `json:"cron,omitempty"`
	DynamicGroupID string      `json:"dynamic_group_id,omitempty"`
	Event          string      `json:"event,omitempty"`
	// RandomDelay spreads the start of each run over [0, RandomDelay).
	RandomDelay string `json:"random_delay,omitempty"`
	// Expiry is how long a run may wait for its computer before it
	// expires; default 24h (10s to 7 days).
	Expiry   string    `json:"expiry,omitempty"`
	Throttle *Throttle `json:"throttle,omitempty"`
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func invalid(format string, args ...any) error {
	return errcode.New(errcode.Invalid, "trigger: "+format, args...)
}

// Validate checks a trigger; errors name the field.
func (t *Trigger) Validate() error {
	if _, err := t.location(); err != nil {
		return err
	}
	needClock := func() error {
		if _, _, err := clock(t.At); err != nil {
			return invalid("at must be a time of day like 03:30")
		}
		return nil
	}
	switch t.Kind {
	case ASAP, ServerStarted:
	case Once:
		if _, err := time.Parse(time.RFC3339, t.At); err != nil {
			return invalid("at must be an RFC 3339 time like 2026-12-24T18:00:00+01:00")
		}
	case Daily:
		if err := needClock(); err != nil {
			return err
		}
	case Weekly:
		if err := needClock(); err != nil {
			return err
		}
		if len(t.Weekdays) == 0 {
			return invalid("weekdays must list at least one of mon, tue, wed, thu, fri, sat, sun")
		}
		for _, d := range t.Weekdays {
			if _, ok := weekdays[strings.ToLower(d)]; !ok {
				return invalid("weekday %q must be one of mon, tue, wed, thu, fri, sat, sun", d)
			}
		}
	case Monthly:
		if err := needClock(); err != nil {
			return err
		}
		switch {
		case t.NthWeekday != nil && t.DayOfMonth != 0:
			return invalid("give day_of_month or nth_weekday, not both")
		case t.NthWeekday != nil:
			n := t.NthWeekday
			if _, ok := weekdays[strings.ToLower(n.Weekday)]; !ok || n.N == 0 || n.N < -1 || n.N > 5 {
				return invalid("nth_weekday needs n 1..5 or -1 (last) and a weekday like mon")
			}
		case t.DayOfMonth < -1 || t.DayOfMonth > 31 || t.DayOfMonth == 0:
			return invalid("day_of_month must be 1..31 or -1 (the last day)")
		}
	case Yearly:
		if err := needClock(); err != nil {
			return err
		}
		if t.Month < 1 || t.Month > 12 || t.DayOfMonth < 1 || t.DayOfMonth > 31 {
			return invalid("yearly needs month 1..12 and day_of_month 1..31")
		}
		if t.DayOfMonth > daysIn(time.Month(t.Month), 2024) {
			return invalid("month %d has no day %d", t.Month, t.DayOfMonth)
		}
	case Cron:
		s, err := cronParser.Parse(t.Cron)
		if err != nil {
			return invalid("cron %q: %v", t.Cron, err)
		}
		if s.Next(time.Now()).IsZero() {
			return invalid("cron %q never fires", t.Cron)
		}
	case JoinedDynamic:
		if t.DynamicGroupID == "" {
			return invalid("dynamic_group_id is required")
		}
	case OnEvent:
		if !slices.Contains(Events, t.Event) {
			return invalid("event must be one of %s", strings.Join(Events, ", "))
		}
	default:
		return invalid("kind must be one of asap, once, daily, weekly, monthly, yearly, cron, joined_dynamic_group, event, server_started")
	}
	if d, err := t.delay(); err != nil || d < 0 || d > 24*time.Hour {
		return invalid("random_delay must be a duration up to 24h")
	}
	if d, err := t.expiry(); err != nil || d < 10*time.Second || d > 7*24*time.Hour {
		return invalid("expiry must be a duration from 10s to 168h")
	}
	if th := t.Throttle; th != nil {
		if th.Window != nil {
			if _, _, err := clock(th.Window.From); err != nil {
				return invalid("throttle.window.from must be a time of day")
			}
			if _, _, err := clock(th.Window.To); err != nil {
				return invalid("throttle.window.to must be a time of day")
			}
		}
		if th.OncePer != "" {
			if d, err := time.ParseDuration(th.OncePer); err != nil || d <= 0 {
				return invalid("throttle.once_per must be a positive duration")
			}
		}
		if th.EveryNth < 0 || th.EveryNth > 1_000_000 {
			return invalid("throttle.every_nth must be 0..1000000")
		}
		if nw := th.NWithin; nw != nil {
			if d, err := time.ParseDuration(nw.Period); err != nil || d <= 0 || nw.N < 1 || nw.N > 1_000_000 {
				return invalid("throttle.n_within needs n >= 1 and a positive period")
			}
		}
	}
	return nil
}

func (t *Trigger) location() (*time.Location, error) {
	if t.TimeZone == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(t.TimeZone)
	if err != nil {
		return nil, invalid("time_zone %q is not an IANA time zone like Asia/Tokyo", t.TimeZone)
	}
	return loc, nil
}

func (t *Trigger) delay() (time.Duration, error) {
	if t.RandomDelay == "" {
		return 0, nil
	}
	return time.ParseDuration(t.RandomDelay)
}

// RandomDelayDuration is the random delay window.
func (t *Trigger) RandomDelayDuration() time.Duration { d, _ := t.delay(); return d }

func (t *Trigger) expiry() (time.Duration, error) {
	if t.Expiry == "" {
		return 24 * time.Hour, nil
	}
	return time.ParseDuration(t.Expiry)
}

// ExpiryDuration is how long runs may wait.
func (t *Trigger) ExpiryDuration() time.Duration { d, _ := t.expiry(); return d }

// clock parses "HH:MM".
func clock(s string) (int, int, error) {
	var h, m int
	if _, err := fmt.Sscanf(s, "%d:%d", &h, &m); err != nil || h < 0 || h > 23 || m < 0 || m > 59 || len(s) != 5 {
		return 0, 0, fmt.Errorf("bad time of day %q", s)
	}
	return h, m, nil
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// IsTimed reports whether the trigger fires by the clock (Next applies).
func (t *Trigger) IsTimed() bool {
	switch t.Kind {
	case JoinedDynamic, OnEvent, ServerStarted:
		return false
	}
	return true
}

// Next returns the first firing time strictly after after, or false when
// the trigger fires no more (a past once, an event trigger). The trigger
// must be valid. ASAP fires at after itself when created (created is the
// trigger's creation time).
func (t *Trigger) Next(after, created time.Time) (time.Time, bool) {
	loc, _ := t.location()
	switch t.Kind {
	case ASAP:
		if !after.Before(created) {
			return time.Time{}, false
		}
		return created, true
	case Once:
		at, _ := time.Parse(time.RFC3339, t.At)
		if at.After(after) {
			return at, true
		}
		return time.Time{}, false
	case Cron:
		s, _ := cronParser.Parse(t.Cron)
		next := s.Next(after.In(loc))
		return next, !next.IsZero()
	case Daily, Weekly, Monthly, Yearly:
		h, m, _ := clock(t.At)
		local := after.In(loc)
		// Walk day by day; a yearly Feb 29 may be 8 years away (2096 to 2104).
		for i := 0; i < 8*366+2; i++ {
			d := time.Date(local.Year(), local.Month(), local.Day()+i, h, m, 0, 0, loc)
			if !d.After(after) || !t.onDay(d) {
				continue
			}
			return d, true
		}
	}
	return time.Time{}, false
}

// onDay reports whether the trigger fires on d's calendar day.
func (t *Trigger) onDay(d time.Time) bool {
	switch t.Kind {
	case Daily:
		return true
	case Weekly:
		for _, w := range t.Weekdays {
			if weekdays[strings.ToLower(w)] == d.Weekday() {
				return true
			}
		}
		return false
	case Monthly:
		if n := t.NthWeekday; n != nil {
			if d.Weekday() != weekdays[strings.ToLower(n.Weekday)] {
				return false
			}
			if n.N == -1 {
				return d.Day()+7 > daysIn(d.Month(), d.Year())
			}
			return (d.Day()-1)/7+1 == n.N
		}
		last := daysIn(d.Month(), d.Year())
		if t.DayOfMonth == -1 {
			return d.Day() == last
		}
		return d.Day() == min(t.DayOfMonth, last) // the 31st is the last day in short months
	case Yearly:
		return int(d.Month()) == t.Month && d.Day() == t.DayOfMonth
	}
	return false
}

// ThrottleState is what throttling remembers between occurrences. It is
// reset when the trigger fires (EveryNth, NWithin), when the server
// restarts and when the trigger is edited.
type ThrottleState struct {
	Occurrences int         `json:"occurrences"`
	Recent      []time.Time `json:"recent,omitempty"`
	LastFired   time.Time   `json:"last_fired,omitempty"`
}

// Allow records an occurrence at at and reports whether the task starts.
func (t *Trigger) Allow(st *ThrottleState, at time.Time) bool {
	th := t.Throttle
	if th == nil {
		st.LastFired = at
		return true
	}
	loc, _ := t.location()
	if w := th.Window; w != nil {
		fh, fm, _ := clock(w.From)
		th2, tm, _ := clock(w.To)
		local := at.In(loc)
		now := local.Hour()*60 + local.Minute()
		from, to := fh*60+fm, th2*60+tm
		inside := now >= from && now < to
		if from > to { // crosses midnight
			inside = now >= from || now < to
		}
		if !inside {
			return false
		}
	}
	if th.OncePer != "" && !st.LastFired.IsZero() {
		d, _ := time.ParseDuration(th.OncePer)
		if at.Sub(st.LastFired) < d {
			return false
		}
	}
	st.Occurrences++
	if th.EveryNth > 1 && st.Occurrences%th.EveryNth != 0 {
		return false
	}
	if nw := th.NWithin; nw != nil {
		period, _ := time.ParseDuration(nw.Period)
		st.Recent = append(st.Recent, at)
		kept := st.Recent[:0]
		for _, x := range st.Recent {
			if at.Sub(x) < period {
				kept = append(kept, x)
			}
		}
		st.Recent = kept
		if len(st.Recent) < nw.N {
			return false
		}
	}
	// Fired: the counters start again.
	st.Occurrences, st.Recent, st.LastFired = 0, nil, at
	return true
}

// ParseTrigger decodes and validates a stored or submitted trigger.
func ParseTrigger(raw string) (*Trigger, error) {
	var t Trigger
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, errcode.New(errcode.Invalid, "trigger must be a JSON object with known fields: %v", err)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}
