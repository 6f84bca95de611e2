// Package flagenv registers command-line flags whose defaults come from
// environment variables, so every setting can be given either way (a flag
// wins over its variable). The usage text names the variable.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Set wraps a FlagSet and collects errors in environment values.
type Set struct {
	*flag.FlagSet
	errs []string
}

// New returns a Set that reports errors instead of exiting.
func New(name string) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	return &Set{FlagSet: fs}
}

func usage(help, env string) string {
	if env == "" {
		return help
	}
	return help + " (env " + env + ")"
}

// String registers a string flag.
func (s *Set) String(name, env, def, help string) *string {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		def = v
	}
	return s.FlagSet.String(name, def, usage(help, env))
}

// Duration registers a duration flag.
func (s *Set) Duration(name, env string, def time.Duration, help string) *time.Duration {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s=%q is not a duration like 30s or 24h", env, v))
		} else {
			def = d
		}
	}
	return s.FlagSet.Duration(name, def, usage(help, env))
}

// Int registers an int flag.
func (s *Set) Int(name, env string, def int, help string) *int {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s=%q is not an integer", env, v))
		} else {
			def = n
		}
	}
	return s.FlagSet.Int(name, def, usage(help, env))
}

// BoolEnv registers a boolean flag with a variable (Bool, from the
// FlagSet, has none); the variable takes what strconv.ParseBool
// does (1, true, 0, false...).
func (s *Set) BoolEnv(name, env string, def bool, help string) *bool {
	if v, ok := os.LookupEnv(env); ok && env != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s=%q is not true or false", env, v))
		} else {
			def = b
		}
	}
	return s.FlagSet.Bool(name, def, usage(help, env))
}

// List registers a repeatable flag that also accepts comma-separated
// values; the environment variable is comma-separated.
func (s *Set) List(name, env, help string) *[]string {
	l := &list{}
	if v, ok := os.LookupEnv(env); ok && env != "" {
		l.Set(v)
		l.fromEnv = true
	}
	s.FlagSet.Var(l, name, usage(help, env))
	return &l.vals
}

type list struct {
	vals    []string
	fromEnv bool
}

func (l *list) String() string { return strings.Join(l.vals, ",") }

func (l *list) Set(v string) error {
	if l.fromEnv { // the first flag replaces the environment's value
		l.vals, l.fromEnv = nil, false
	}
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			l.vals = append(l.vals, p)
		}
	}
	return nil
}

// Parse parses args and reports environment errors first.
func (s *Set) Parse(args []string) error {
	if len(s.errs) > 0 {
		return fmt.Errorf("%s", strings.Join(s.errs, "; "))
	}
	if err := s.FlagSet.Parse(args); err != nil {
		return err
	}
	if s.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", s.Arg(0))
	}
	return nil
}
