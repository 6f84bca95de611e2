package policy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"

	"github.com/mamori/mamori/internal/errcode"
)

// Flag says how a policy sets a setting. A setting a policy does not list is
// "not applied".
type Flag string

// Flags.
const (
	Apply Flag = "apply" // a later policy may override
	Force Flag = "force" // no later policy can override, not even another force
)

// MergeRule says how a list setting combines with what earlier policies set.
type MergeRule string

// Merge rules.
const (
	Replace MergeRule = "replace"
	Append  MergeRule = "append"
	Prepend MergeRule = "prepend"
)

// Value is one setting in a policy.
type Value struct {
	Flag  Flag      `json:"flag"`
	Value any       `json:"value"`
	Merge MergeRule `json:"merge,omitempty"` // lists only; default replace
}

// Policy configures one product.
type Policy struct {
	ID       string
	Name     string
	Product  string
	Settings map[string]Value
}

// ParseSettings validates a policy's settings (JSON object key -> Value)
// against the schema of product and returns them normalized. Errors name
// the setting.
func ParseSettings(product string, raw map[string]json.RawMessage) (map[string]Value, error) {
	if !ValidProduct(product) {
		return nil, errcode.New(errcode.Invalid, "product must be one of agent, protection, updates")
	}
	out := make(map[string]Value, len(raw))
	for key, r := range raw {
		s, ok := Lookup(product, key)
		if !ok {
			return nil, errcode.New(errcode.Invalid, "%s has no setting %q", product, key)
		}
		var v struct {
			Flag  Flag      `json:"flag"`
			Value any       `json:"value"`
			Merge MergeRule `json:"merge"`
		}
		dec := json.NewDecoder(bytesReader(r))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			return nil, errcode.New(errcode.Invalid, "%s.%s: must be {\"flag\", \"value\"[, \"merge\"]}: %v", product, key, err)
		}
		if v.Flag != Apply && v.Flag != Force {
			return nil, errcode.New(errcode.Invalid, "%s.%s: flag must be apply or force", product, key)
		}
		switch {
		case s.Kind != KindList && v.Merge != "":
			return nil, errcode.New(errcode.Invalid, "%s.%s: merge applies to list settings only", product, key)
		case s.Kind == KindList && v.Merge == "":
			v.Merge = Replace
		case s.Kind == KindList && v.Merge != Replace && v.Merge != Append && v.Merge != Prepend:
			return nil, errcode.New(errcode.Invalid, "%s.%s: merge must be replace, append or prepend", product, key)
		}
		norm, err := s.Normalize(v.Value)
		if err != nil {
			return nil, err
		}
		out[key] = Value{Flag: v.Flag, Value: norm, Merge: v.Merge}
	}
	return out, nil
}

// Target kinds of an assignment.
const (
	TargetStatic   = "static"
	TargetDynamic  = "dynamic"
	TargetComputer = "computer"
)

// Assignment puts a policy on a target; Rank orders the policies of one
// target (lower first).
type Assignment struct {
	ID         string `json:"id"`
	PolicyID   string `json:"policy_id"`
	TargetType string `json:"target_type"`
	TargetID   string `json:"target_id"`
	TargetName string `json:"target_name,omitempty"`
	Rank       int    `json:"rank"`
}

// DynGroup is what ordering needs of a dynamic group.
type DynGroup struct {
	ID, Name                      string
	StaticParentID, DynamicParent string
}

// Order returns the assignments that apply to a computer, in application
// order (DOMAIN.md): from All down the computer's static path; at each
// level the static group's policies, then the dynamic groups under it that
// the computer is in (by name, each followed depth-first by its dynamic
// children); the computer's own assignments last. Within a target,
// assignments go by rank.
func Order(computerID string, staticPath []string, dyn []DynGroup, memberOf map[string]bool, assignments []Assignment) []Assignment {
	byTarget := map[string][]Assignment{}
	for _, a := range assignments {
		k := a.TargetType + ":" + a.TargetID
		byTarget[k] = append(byTarget[k], a)
	}
	for k := range byTarget {
		slices.SortStableFunc(byTarget[k], func(a, b Assignment) int { return cmp.Compare(a.Rank, b.Rank) })
	}
	children := map[string][]DynGroup{} // parent (static or dynamic) id -> dynamic children
	for _, d := range dyn {
		p := d.StaticParentID
		if p == "" {
			p = "dyn:" + d.DynamicParent
		}
		children[p] = append(children[p], d)
	}
	for k := range children {
		slices.SortFunc(children[k], func(a, b DynGroup) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID)) })
	}
	var out []Assignment
	var visit func(d DynGroup, depth int)
	visit = func(d DynGroup, depth int) {
		if !memberOf[d.ID] || depth > 64 {
			return
		}
		out = append(out, byTarget[TargetDynamic+":"+d.ID]...)
		for _, c := range children["dyn:"+d.ID] {
			visit(c, depth+1)
		}
	}
	for _, s := range staticPath {
		out = append(out, byTarget[TargetStatic+":"+s]...)
		for _, d := range children[s] {
			visit(d, 0)
		}
	}
	return append(out, byTarget[TargetComputer+":"+computerID]...)
}

// Source says where a value came from.
type Source struct {
	PolicyID     string `json:"policy_id"`
	PolicyName   string `json:"policy_name"`
	AssignmentID string `json:"assignment_id"`
	TargetType   string `json:"target_type"`
	TargetID     string `json:"target_id"`
	TargetName   string `json:"target_name,omitempty"`
	Flag         Flag   `json:"flag"`
	Merge        string `json:"merge,omitempty"`
}

// Effective is one setting of a computer's effective configuration.
type Effective struct {
	Product string `json:"product"`
	Key     string `json:"key"`
	Value   any    `json:"value"`
	Default bool   `json:"default"` // no policy sets it
	Forced  bool   `json:"forced"`
	// Source is the policy that last set the value (nil for the default);
	// Sources lists every policy that contributed to a list, in order.
	Source  *Source  `json:"source"`
	Sources []Source `json:"sources,omitempty"`
}

// Compute merges the policies of the ordered assignments into the
// effective configuration: every setting of the schema, with provenance.
func Compute(ordered []Assignment, policies map[string]*Policy) []Effective {
	state := map[string]*Effective{}
	var keys []string
	for _, s := range Schema {
		k := s.Product + "." + s.Key
		keys = append(keys, k)
		state[k] = &Effective{Product: s.Product, Key: s.Key, Value: s.Default, Default: true}
	}
	for _, a := range ordered {
		p := policies[a.PolicyID]
		if p == nil {
			continue
		}
		for key, v := range p.Settings {
			e := state[p.Product+"."+key]
			if e == nil || e.Forced {
				continue // unknown to this schema, or locked by an earlier force
			}
			src := Source{PolicyID: p.ID, PolicyName: p.Name, AssignmentID: a.ID, TargetType: a.TargetType, TargetID: a.TargetID,
				TargetName: a.TargetName, Flag: v.Flag, Merge: string(v.Merge)}
			list, isList := v.Value.([]string)
			switch {
			case !isList || v.Merge == Replace || e.Default:
				if isList {
					e.Value = slices.Clone(list)
					e.Sources = []Source{src}
				} else {
					e.Value = v.Value
				}
			case v.Merge == Append:
				e.Value = append(slices.Clone(e.Value.([]string)), list...)
				e.Sources = append(e.Sources, src)
			case v.Merge == Prepend:
				e.Value = append(slices.Clone(list), e.Value.([]string)...)
				e.Sources = append(e.Sources, src)
			}
			e.Default = false
			e.Forced = v.Flag == Force
			e.Source = &src
		}
	}
	out := make([]Effective, 0, len(keys))
	for _, k := range keys {
		out = append(out, *state[k])
	}
	return out
}

// Document is what an agent receives: the values policies set by product
// and key (settings no policy sets are left out: the agent applies its
// defaults), the forced keys, and a version (hash of the content) the agent
// reports back.
type Document struct {
	Version  string                    `json:"version"`
	Settings map[string]map[string]any `json:"settings"`
	Forced   []string                  `json:"forced"` // "product.key"
}

// NewDocument builds the agent's document from an effective configuration.
func NewDocument(eff []Effective) *Document {
	d := &Document{Settings: map[string]map[string]any{}, Forced: []string{}}
	for _, e := range eff {
		if e.Default {
			continue // the agent knows the defaults; its own command line may choose them
		}
		if d.Settings[e.Product] == nil {
			d.Settings[e.Product] = map[string]any{}
		}
		d.Settings[e.Product][e.Key] = e.Value
		if e.Forced {
			d.Forced = append(d.Forced, e.Product+"."+e.Key)
		}
	}
	slices.Sort(d.Forced)
	d.Version = d.Hash()
	return d
}

// Hash is the version of a document's content.
func (d *Document) Hash() string {
	b, _ := json.Marshal(struct {
		S map[string]map[string]any `json:"s"`
		F []string                  `json:"f"`
	}{d.Settings, d.Forced}) // map keys are sorted by encoding/json: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// MaxDocumentBytes bounds a document on the wire.
const MaxDocumentBytes = 1 << 20

// ParseDocument is the agent's check of a pushed document: well-formed,
// its version matching its content, every known setting valid for the
// schema (values normalized). Settings of products or keys this build does
// not know are dropped and named in unknown (a newer server); forced keys
// must name settings of the document.
func ParseDocument(raw []byte) (d *Document, unknown []string, err error) {
	if len(raw) > MaxDocumentBytes {
		return nil, nil, errcode.New(errcode.Invalid, "configuration larger than %d bytes", MaxDocumentBytes)
	}
	d = &Document{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(d); err != nil {
		return nil, nil, errcode.New(errcode.Invalid, "configuration is not a JSON document: %v", err)
	}
	if dec.More() {
		return nil, nil, errcode.New(errcode.Invalid, "configuration has data after the document")
	}
	if d.Settings == nil {
		return nil, nil, errcode.New(errcode.Invalid, "configuration has no settings")
	}
	if d.Forced == nil {
		d.Forced = []string{}
	}
	if h := d.Hash(); h != d.Version {
		return nil, nil, errcode.New(errcode.Invalid, "configuration version %q does not match its content (%s)", d.Version, h)
	}
	for product, kv := range d.Settings {
		for key, v := range kv {
			s, ok := Lookup(product, key)
			if !ok {
				unknown = append(unknown, product+"."+key)
				delete(kv, key)
				continue
			}
			n, err := s.Normalize(v)
			if err != nil {
				return nil, nil, err
			}
			kv[key] = n
		}
	}
	for _, k := range d.Forced {
		product, key, _ := strings.Cut(k, ".")
		if _, ok := d.Settings[product][key]; !ok && !slices.Contains(unknown, k) {
			return nil, nil, errcode.New(errcode.Invalid, "forced setting %q is not in the configuration", k)
		}
	}
	slices.Sort(unknown)
	return d, unknown, nil
}
