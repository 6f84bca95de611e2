// Package storetest is the conformance suite every store backend must pass.
// A backend's test calls Run with a function that opens a fresh, empty,
// migrated store for one test:
//
//	func TestSQLite(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) *store.DB {
//			db, err := store.OpenSQLite(t.Context(), t.TempDir(), store.Options{})
//			...
//			t.Cleanup(func() { db.Close() })
//			return db
//		})
//	}
//
// open is called once per subtest, from parallel subtests; it must give each
// call its own database and close it in a t.Cleanup. The suite only uses the
// store's exported methods, so what it pins down is the contract, not the
// SQL: error codes, ordering, idempotence and the limits of concurrent use.
//
// Where SQLite and PostgreSQL would legitimately differ (collation of mixed
// case text, Unicode case folding in LOWER), the suite avoids depending on
// either.
package storetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mamori/mamori/internal/errcode"
	"github.com/mamori/mamori/internal/store"
)

// T0 is the suite's reference time. Store methods that take a time are
// given times relative to it, so nothing depends on the wall clock.
var T0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

type test struct {
	name string
	fn   func(t *testing.T, db *store.DB)
}

type group struct {
	name  string
	tests []test
}

var suite = []group{
	{"Schema", []test{
		{"VersionIsAtLeastOneAndPingAnswers", testSchemaVersion},
	}},
	{"Groups", []test{
		{"SeededAllAndLostFound", testGroupsSeeded},
		{"ResolveAcceptsAllPathForms", testGroupsResolve},
		{"CreateGroupBuildsPaths", testCreateGroupBuildsPaths},
		{"CreateGroupSiblingDuplicateIsConflict", testCreateGroupConflict},
		{"CreateGroupUnknownParentIsNotFound", testCreateGroupUnknownParent},
		{"CreateGroupRefusesInvalidNames", testCreateGroupInvalidNames},
		{"DescendantsIncludeSubtreeOnly", testGroupDescendants},
	}},
	{"Users", []test{
		{"CreateThenLookUpByNameAndID", testUsersRoundTrip},
		{"DuplicateUsernameIsConflict", testUsersDuplicate},
		{"UnknownUserIsNotFound", testUsersNotFound},
	}},
	{"Sessions", []test{
		{"ExpiredSessionIsNotReturned", testSessionExpiry},
		{"ExtendSessionMovesExpiry", testSessionExtend},
		{"DeleteSessionLogsOut", testSessionDelete},
		{"DeleteExpiredSessionsKeepsLiveOnes", testSessionDeleteExpired},
	}},
	{"EnrollmentTokens", []test{
		{"CreateListGetRevoke", testTokensCRUD},
		{"CheckRefusesUnusableTokensSayingWhy", testCheckTokenRefusals},
		{"EnrollConsumesOneUseAndSetsGroup", testEnrollConsumesOneUse},
		{"EnrollRefusesUsedUpToken", testEnrollUsedUp},
		{"EnrollRefusesUnusableTokens", testEnrollRefusesUnusable},
		{"UnlimitedTokenNeverRunsOut", testUnlimitedToken},
		{"ConcurrentEnrollNeverExceedsUses", testConcurrentEnroll},
	}},
	{"Clones", []test{
		{"SameFingerprintMarksBothComputers", testCloneMarksBoth},
		{"RevokedTwinDoesNotCount", testCloneIgnoresRevoked},
	}},
	{"CheckIn", []test{
		{"SectionsAreUpserted", testCheckInSections},
		{"EventsAreStoredOncePerComputerAndID", testCheckInEventsOnce},
		{"SummaryUpdatesOnlyNonEmptyFields", testCheckInSummary},
	}},
	{"Events", []test{
		{"NewestFirstWithTotal", testEventsNewestFirst},
		{"TypeFilterExactAndPrefix", testEventsTypeFilter},
		{"Pagination", testEventsPagination},
	}},
	{"ListComputers", []test{
		{"NameFilterMatchesNameAndHostname", testListNameFilter},
		{"NameFilterTreatsLikeMetacharactersLiterally", testListNameLikeMeta},
		{"StatusFilter", testListStatusFilter},
		{"InvalidStatusOrSortIsInvalid", testListInvalid},
		{"GroupFilter", testListGroupFilter},
		{"SortByEveryField", testListSort},
		{"LimitOffsetTotal", testListPaging},
		{"RevokedExcludedUnlessAsked", testListRevoked},
		{"EngineReportAndOutdatedFilter", testListEngine},
		{"ComputersByIDReadsManyAtOnce", testComputersByID},
	}},
	{"Presence", []test{
		{"OnlineThenOffline", testPresenceOnlineOffline},
		{"LastSeenNeverMovesBackwards", testPresenceLastSeenMonotonic},
		{"RevokedComputerStaysOffline", testPresenceRevoked},
		{"ReapingAllServersTakesEveryoneOffline", testReapAll},
		{"OfflineOnlyFromTheComputersServer", testPresenceOwnedByServer},
		{"ABatchMarksEachStatusChangeAndConnection", testPresenceBatchChanges},
		{"StatusesOfOneComputerInABatchApplyInOrder", testPresenceBatchInOrder},
	}},
	{"Servers", []test{
		{"ReapTakesOfflineOnlyTheDeadServersComputers", testReapServers},
		{"HeartbeatOfAReapedServerIsNotFound", testHeartbeatReaped},
		{"SignalsByTimeWindowWithData", testSignals},
		{"OnlineElsewhere", testOnlineElsewhere},
	}},
	{"Detections", []test{
		{"DetectionEventsAreIndexedOnce", testDetectionsIndexedOnce},
		{"FiltersAndStates", testDetectionsFiltersAndStates},
		{"AFindRepeatedWhileUnresolvedCountsOnIt", testDetectionRepeats},
		{"QuarantinedFilesReleasedOnTheComputer", testQuarantineReleased},
		{"ApplyCheckInsWritesABatchAtomically", testApplyCheckInsBatch},
	}},
	{"GroupTree", []test{
		{"IsWithinFollowsAncestors", testIsWithin},
		{"RenameGroup", testRenameGroup},
		{"MoveGroupRefusesCycles", testMoveGroup},
		{"GroupMembersOfCountsWhatLivesThere", testGroupMembersOf},
		{"DeleteGroupRefusals", testDeleteGroupRefusals},
		{"DeleteGroupWithoutMoveToNeedsAnEmptyGroup", testDeleteGroupNotEmpty},
		{"DeleteGroupMovesMembersAndDropsScopes", testDeleteGroupMovesMembers},
		{"DeleteGroupWithOnlyRevokedComputers", testDeleteGroupWithOnlyRevokedComputers},
	}},
	{"AdminComputers", []test{
		{"MoveComputerIsVersioned", testMoveComputer},
		{"ComputerIDsByGroupWithoutRevoked", testComputerIDs},
		{"ListComputersTagFilter", testListTagFilter},
		{"EnrollmentTokenAccessGroup", testTokenAccessGroup},
	}},
	{"PermissionSets", []test{
		{"BuiltinsGrantEverythingOnAll", testBuiltinPermissionSets},
		{"CreateReadUpdateDelete", testPermSetCRUD},
		{"NameIsUnique", testPermSetNameConflict},
		{"UnknownGroupsAreNotFound", testPermSetUnknownGroups},
		{"BuiltinsAreImmutable", testPermSetBuiltinsImmutable},
		{"UserPermissionSets", testUserPermissionSets},
	}},
	{"AdminUsers", []test{
		{"CreateUserWithSetsAndHomeGroup", testCreateUserWithSets},
		{"UpdateUserIsVersioned", testUpdateUser},
		{"ListUsersFiltersSortsPages", testListUsers},
		{"DeleteUserCascades", testDeleteUserCascades},
		{"LoginFailuresLockAtMaxAndSuccessClears", testLoginFailureLocking},
		{"UseTOTPStepRefusesEqualAndOlder", testUseTOTPStep},
		{"RecoveryCodesAreSingleUseAndReplaced", testRecoveryCodes},
		{"SessionSecondFactorFlag", testSessionSecondFactor},
		{"DeleteUserSessions", testDeleteUserSessions},
	}},
	{"APITokens", []test{
		{"CreateListRevokeTouch", testAPITokens},
	}},
	{"Audit", []test{
		{"FiltersNewestFirstAndPaging", testAuditFilters},
		{"EachAuditStreamsNewestFirst", testEachAudit},
		{"DeleteAuditBeforeIsRetention", testDeleteAuditBefore},
		{"LongFieldsAreClippedToValidUTF8", testAuditClipsLongFields},
	}},
	{"Settings", []test{
		{"VersionedPuts", testSettings},
	}},
	{"Tags", []test{
		{"Validation", testValidateTag},
		{"AddRemoveAndCountByGroup", testTags},
		{"PerComputerLimit", testTagLimit},
	}},
	{"Revocation", []test{
		{"RevokeComputerRevokesItsCertificates", testRevokeComputer},
		{"RevokeUnknownComputerIsNotFound", testRevokeUnknown},
		{"AgentCertificateBySerial", testAgentCertificateBySerial},
	}},
	{"AssignmentsAndTriggers", []test{
		{"RankAndUnassignNameTheirVersion", testAssignmentVersions},
		{"TriggersLoseDeletedGroups", testTriggersLoseDeletedGroups},
	}},
	{"Retention", []test{
		{"DeletesWhatOutlivedItAndNothingElse", testRetention},
	}},
	{"TaskRuns", []test{
		{"ListRunsScopedToWhatTheCallerMayRead", testListRunsScoped},
		{"PendingRunsOfManyComputersInOneCall", testPendingRunsBatched},
	}},
	{"AgentSession", []test{
		{"ComputerWithoutSections", testAgentSessionNoSections},
		{"SectionHashesOfItsComputer", testAgentSessionSections},
		{"UnknownSerialIsNotFound", testAgentSessionUnknown},
		{"RevocationsAreReturned", testAgentSessionRevoked},
		{"TwoCertificatesOfOneComputer", testAgentSessionTwoCertificates},
	}},
}

// Run runs the conformance suite. open must return a fresh, migrated store
// that is closed when t ends; it is called from parallel subtests.
func Run(t *testing.T, open func(t *testing.T) *store.DB) {
	for _, g := range suite {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, open(t))
				})
			}
		})
	}
}

// ---- helpers ---------------------------------------------------------------

// WantCode fails t unless err carries code.
func WantCode(t *testing.T, err error, code errcode.Code) {
	t.Helper()
	if got := errcode.Of(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// NewToken stores an enrollment token for groupID allowing uses enrollments
// (0: unlimited), valid from T0 for a day, and returns it; its SecretHash is
// what EnrollComputer and CheckEnrollmentToken take.
func NewToken(t *testing.T, db *store.DB, groupID string, uses int) *store.EnrollmentToken {
	t.Helper()
	tok := &store.EnrollmentToken{
		ID:          "tok-" + randomHex(t, 8),
		SecretHash:  randomHex(t, 32),
		GroupID:     groupID,
		Description: "storetest",
		ExpiresAt:   T0.Add(24 * time.Hour),
		UsesAllowed: uses,
		CreatedBy:   "storetest",
		CreatedAt:   T0,
	}
	must(t, db.CreateEnrollmentToken(t.Context(), tok))
	return tok
}

// Enroll enrolls c with tok at now, filling in an id, host name, hardware
// fingerprint and certificate when c lacks them, and returns the stored row.
func Enroll(t *testing.T, db *store.DB, tok *store.EnrollmentToken, now time.Time, c store.Computer) *store.Computer {
	t.Helper()
	if c.ID == "" {
		c.ID = "c-" + randomHex(t, 8)
	}
	if c.Name == "" {
		c.Name = c.ID
	}
	if c.Hostname == "" {
		c.Hostname = c.Name
	}
	if c.HardwareFingerprint == "" {
		c.HardwareFingerprint = randomHex(t, 16)
	}
	cert := &store.AgentCertificate{Serial: randomHex(t, 16), ComputerID: c.ID, IssuedAt: now, NotAfter: now.Add(365 * 24 * time.Hour)}
	must(t, db.EnrollComputer(t.Context(), tok.SecretHash, now, &c, cert))
	got, err := db.ComputerByID(t.Context(), c.ID)
	must(t, err)
	return got
}

func ids(cs []*store.Computer) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func sortedIDs(cs []*store.Computer) []string {
	out := ids(cs)
	slices.Sort(out)
	return out
}

func eventIDs(es []store.Event) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func list(t *testing.T, db *store.DB, f store.ComputerFilter) ([]*store.Computer, int) {
	t.Helper()
	cs, total, err := db.ListComputers(t.Context(), f)
	if err != nil {
		t.Fatalf("ListComputers(%+v): %v", f, err)
	}
	return cs, total
}

func computer(t *testing.T, db *store.DB, id string) *store.Computer {
	t.Helper()
	c, err := db.ComputerByID(t.Context(), id)
	must(t, err)
	return c
}

func token(t *testing.T, db *store.DB, id string) *store.EnrollmentToken {
	t.Helper()
	tok, err := db.EnrollmentTokenByID(t.Context(), id)
	must(t, err)
	return tok
}

func groups(t *testing.T, db *store.DB) *store.GroupTree {
	t.Helper()
	tree, err := db.Groups(t.Context())
	must(t, err)
	return tree
}

// ---- schema ----------------------------------------------------------------

func testSchemaVersion(t *testing.T, db *store.DB) {
	if v := db.SchemaVersion(); v < 1 {
		t.Fatalf("SchemaVersion = %d, want >= 1", v)
	}
	must(t, db.Ping(t.Context()))
}

// ---- groups ----------------------------------------------------------------

func testGroupsSeeded(t *testing.T, db *store.DB) {
	tree := groups(t, db)
	var paths []string
	for _, g := range tree.List() {
		paths = append(paths, g.Path)
	}
	if want := []string{"All", "All/Lost & Found"}; !slices.Equal(paths, want) {
		t.Fatalf("seeded group paths = %q, want %q", paths, want)
	}
	all, ok := tree.Get(store.GroupAll)
	if !ok || all.Name != "All" || all.ParentID != "" || all.Path != "All" {
		t.Fatalf("All = %+v (found %v)", all, ok)
	}
	lf, ok := tree.Get(store.GroupLostFound)
	if !ok || lf.Name != "Lost & Found" || lf.ParentID != store.GroupAll || lf.Path != "All/Lost & Found" {
		t.Fatalf("Lost & Found = %+v (found %v)", lf, ok)
	}
	if _, ok := tree.Get("nope"); ok {
		t.Fatal("Get(nope) found a group")
	}
}

func testGroupsResolve(t *testing.T, db *store.DB) {
	servers, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	must(t, err)
	web, err := db.CreateGroup(t.Context(), servers.ID, "Web")
	must(t, err)
	tree := groups(t, db)
	for _, tc := range []struct {
		path   string
		wantID string // "" means not_found
	}{
		{"All", store.GroupAll},
		{"", store.GroupAll},
		{"/", store.GroupAll},
		{"All/Lost & Found", store.GroupLostFound},
		{"Lost & Found", store.GroupLostFound},
		{"/Lost & Found", store.GroupLostFound},
		{"  Lost & Found/ ", store.GroupLostFound},
		{"All/Servers", servers.ID},
		{"Servers", servers.ID},
		{"/Servers", servers.ID},
		{"Servers/", servers.ID},
		{"All/Servers/Web", web.ID},
		{"Servers/Web", web.ID},
		{"/Servers/Web", web.ID},
		{"servers", ""}, // names match exactly
		{"Web", ""},     // relative to All, not a search
		{"All/Nope", ""},
		{"Nope", ""},
		{"Servers//Web", ""},
	} {
		g, err := tree.Resolve(tc.path)
		if tc.wantID == "" {
			if errcode.Of(err) != errcode.NotFound {
				t.Errorf("Resolve(%q) = %+v, %v; want not_found", tc.path, g, err)
			}
			continue
		}
		if err != nil || g.ID != tc.wantID {
			t.Errorf("Resolve(%q) = %+v, %v; want id %q", tc.path, g, err, tc.wantID)
		}
	}
}

func testCreateGroupBuildsPaths(t *testing.T, db *store.DB) {
	before := time.Now().Add(-time.Second)
	servers, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	must(t, err)
	if servers.ID == "" || servers.ParentID != store.GroupAll || servers.Name != "Servers" || servers.CreatedAt.Before(before) {
		t.Fatalf("CreateGroup returned %+v", servers)
	}
	// Inner spaces, punctuation and non-ASCII letters are fine.
	web, err := db.CreateGroup(t.Context(), servers.ID, "Web & Mail (DMZ) — Ünïcødé")
	must(t, err)
	tree := groups(t, db)
	got, ok := tree.Get(web.ID)
	if !ok || got.Path != "All/Servers/Web & Mail (DMZ) — Ünïcødé" || got.ParentID != servers.ID {
		t.Fatalf("stored group = %+v (found %v)", got, ok)
	}
	if !got.CreatedAt.Equal(web.CreatedAt) {
		t.Errorf("CreatedAt stored %v, returned %v", got.CreatedAt, web.CreatedAt)
	}
	var paths []string
	for _, g := range tree.List() {
		paths = append(paths, g.Path)
	}
	if !slices.IsSorted(paths) || len(paths) != 4 {
		t.Fatalf("List paths = %q, want 4 sorted paths", paths)
	}
}

func testCreateGroupConflict(t *testing.T, db *store.DB) {
	a, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	must(t, err)
	_, err = db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	WantCode(t, err, errcode.Conflict)
	// The same name under another parent is not a sibling.
	if _, err := db.CreateGroup(t.Context(), a.ID, "Servers"); err != nil {
		t.Fatalf("same name under a different parent: %v", err)
	}
	if _, err := db.CreateGroup(t.Context(), store.GroupLostFound, "Servers"); err != nil {
		t.Fatalf("same name under Lost & Found: %v", err)
	}
	// Names differing only in case are different groups (exact matching).
	if _, err := db.CreateGroup(t.Context(), store.GroupAll, "servers"); err != nil {
		t.Fatalf("name differing in case: %v", err)
	}
	// The seeded group's name is taken under All too.
	_, err = db.CreateGroup(t.Context(), store.GroupAll, "Lost & Found")
	WantCode(t, err, errcode.Conflict)
	if n := len(groups(t, db).List()); n != 6 {
		t.Fatalf("%d groups after the conflicts, want 6", n)
	}
}

func testCreateGroupUnknownParent(t *testing.T, db *store.DB) {
	for _, parent := range []string{"nope", ""} {
		_, err := db.CreateGroup(t.Context(), parent, "Servers")
		WantCode(t, err, errcode.NotFound)
	}
	if n := len(groups(t, db).List()); n != 2 {
		t.Fatalf("%d groups, want only the 2 seeded", n)
	}
}

func testCreateGroupInvalidNames(t *testing.T, db *store.DB) {
	for _, tc := range []struct {
		name, group string
	}{
		{"empty", ""},
		{"only spaces", "   "},
		{"slash alone", "/"},
		{"slash inside", "a/b"},
		{"leading space", " Servers"},
		{"trailing space", "Servers "},
		{"tab", "Ser\tvers"},
		{"newline", "Servers\n"},
		{"NUL", "Ser\x00vers"},
		{"DEL", "Ser\x7fvers"},
		{"escape", "\x1b[31mred"},
		{"too long", strings.Repeat("a", 129)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := db.CreateGroup(t.Context(), store.GroupAll, tc.group)
			if errcode.Of(err) != errcode.Invalid {
				t.Fatalf("CreateGroup(%q) = %+v, %v; want invalid", tc.group, g, err)
			}
		})
	}
	if n := len(groups(t, db).List()); n != 2 {
		t.Fatalf("%d groups after invalid names, want 2", n)
	}
	if _, err := db.CreateGroup(t.Context(), store.GroupAll, strings.Repeat("a", 128)); err != nil {
		t.Fatalf("a 128-byte name must be accepted: %v", err)
	}
}

func testGroupDescendants(t *testing.T, db *store.DB) {
	servers, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	must(t, err)
	web, err := db.CreateGroup(t.Context(), servers.ID, "Web")
	must(t, err)
	edge, err := db.CreateGroup(t.Context(), web.ID, "Edge")
	must(t, err)
	servers2, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers2") // shares a name prefix, not a path prefix
	must(t, err)
	tree := groups(t, db)
	sorted := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	for _, tc := range []struct {
		id   string
		want []string
	}{
		{servers.ID, []string{servers.ID, web.ID, edge.ID}},
		{web.ID, []string{web.ID, edge.ID}},
		{edge.ID, []string{edge.ID}},
		{servers2.ID, []string{servers2.ID}},
		{store.GroupAll, []string{store.GroupAll, store.GroupLostFound, servers.ID, web.ID, edge.ID, servers2.ID}},
		{"nope", nil},
	} {
		got := sorted(tree.Descendants(tc.id))
		if !slices.Equal(got, sorted(tc.want)) {
			t.Errorf("Descendants(%s) = %q, want %q", tc.id, got, sorted(tc.want))
		}
	}
}

// ---- users and sessions ----------------------------------------------------

func testUsersRoundTrip(t *testing.T, db *store.DB) {
	if n, err := db.CountUsers(t.Context()); err != nil || n != 0 {
		t.Fatalf("CountUsers on a new store = %d, %v", n, err)
	}
	u := &store.User{ID: "u1", Username: "alice", PasswordHash: "$argon2id$v=19$x", Disabled: true}
	must(t, db.CreateUser(t.Context(), u))
	must(t, db.CreateUser(t.Context(), &store.User{ID: "u2", Username: "bob", PasswordHash: "h"}))
	for _, get := range []func() (*store.User, error){
		func() (*store.User, error) { return db.UserByName(t.Context(), "alice") },
		func() (*store.User, error) { return db.UserByID(t.Context(), "u1") },
	} {
		got, err := get()
		must(t, err)
		if got.ID != "u1" || got.Username != "alice" || got.PasswordHash != u.PasswordHash || !got.Disabled || got.CreatedAt.IsZero() || got.UpdatedAt.IsZero() {
			t.Fatalf("user = %+v", got)
		}
	}
	bob, err := db.UserByName(t.Context(), "bob")
	must(t, err)
	if bob.ID != "u2" || bob.Disabled {
		t.Fatalf("bob = %+v", bob)
	}
	if n, err := db.CountUsers(t.Context()); err != nil || n != 2 {
		t.Fatalf("CountUsers = %d, %v; want 2", n, err)
	}
}

func testUsersDuplicate(t *testing.T, db *store.DB) {
	must(t, db.CreateUser(t.Context(), &store.User{ID: "u1", Username: "alice", PasswordHash: "h1"}))
	err := db.CreateUser(t.Context(), &store.User{ID: "u2", Username: "alice", PasswordHash: "h2"})
	WantCode(t, err, errcode.Conflict)
	got, err := db.UserByName(t.Context(), "alice")
	must(t, err)
	if got.ID != "u1" || got.PasswordHash != "h1" {
		t.Fatalf("the first alice was replaced: %+v", got)
	}
	if n, _ := db.CountUsers(t.Context()); n != 1 {
		t.Fatalf("CountUsers = %d, want 1", n)
	}
}

func testUsersNotFound(t *testing.T, db *store.DB) {
	must(t, db.CreateUser(t.Context(), &store.User{ID: "u1", Username: "alice", PasswordHash: "h"}))
	_, err := db.UserByName(t.Context(), "Alice")
	WantCode(t, err, errcode.NotFound)
	_, err = db.UserByName(t.Context(), "bob")
	WantCode(t, err, errcode.NotFound)
	_, err = db.UserByID(t.Context(), "u2")
	WantCode(t, err, errcode.NotFound)
}

func newSession(t *testing.T, db *store.DB, hash string, expires time.Time) {
	t.Helper()
	must(t, db.CreateSession(t.Context(), &store.Session{
		TokenHash: hash, UserID: "u1", CreatedAt: T0, ExpiresAt: expires, LastUsedAt: T0, RemoteAddr: "192.0.2.1",
	}))
}

func withUser(t *testing.T, db *store.DB) {
	t.Helper()
	must(t, db.CreateUser(t.Context(), &store.User{ID: "u1", Username: "alice", PasswordHash: "h"}))
}

func testSessionExpiry(t *testing.T, db *store.DB) {
	withUser(t, db)
	newSession(t, db, "s1", T0.Add(time.Hour))
	s, u, err := db.SessionByTokenHash(t.Context(), "s1", T0.Add(time.Hour-time.Millisecond))
	must(t, err)
	if s.TokenHash != "s1" || s.UserID != "u1" || !s.ExpiresAt.Equal(T0.Add(time.Hour)) || !s.CreatedAt.Equal(T0) ||
		!s.LastUsedAt.Equal(T0) || s.RemoteAddr != "192.0.2.1" {
		t.Fatalf("session = %+v", s)
	}
	if u.ID != "u1" || u.Username != "alice" {
		t.Fatalf("session user = %+v", u)
	}
	for _, at := range []time.Time{T0.Add(time.Hour), T0.Add(2 * time.Hour)} {
		_, _, err := db.SessionByTokenHash(t.Context(), "s1", at)
		WantCode(t, err, errcode.NotFound)
	}
	_, _, err = db.SessionByTokenHash(t.Context(), "nope", T0)
	WantCode(t, err, errcode.NotFound)
}

func testSessionExtend(t *testing.T, db *store.DB) {
	withUser(t, db)
	newSession(t, db, "s1", T0.Add(time.Hour))
	used := T0.Add(50 * time.Minute)
	must(t, db.ExtendSession(t.Context(), "s1", used, used.Add(time.Hour)))
	s, _, err := db.SessionByTokenHash(t.Context(), "s1", T0.Add(90*time.Minute))
	if err != nil {
		t.Fatalf("session not usable after its original expiry although extended: %v", err)
	}
	if !s.LastUsedAt.Equal(used) || !s.ExpiresAt.Equal(used.Add(time.Hour)) {
		t.Fatalf("extended session = %+v", s)
	}
	_, _, err = db.SessionByTokenHash(t.Context(), "s1", used.Add(time.Hour))
	WantCode(t, err, errcode.NotFound)
}

func testSessionDelete(t *testing.T, db *store.DB) {
	withUser(t, db)
	newSession(t, db, "s1", T0.Add(time.Hour))
	newSession(t, db, "s2", T0.Add(time.Hour))
	must(t, db.DeleteSession(t.Context(), "s1"))
	_, _, err := db.SessionByTokenHash(t.Context(), "s1", T0)
	WantCode(t, err, errcode.NotFound)
	if _, _, err := db.SessionByTokenHash(t.Context(), "s2", T0); err != nil {
		t.Fatalf("deleting s1 touched s2: %v", err)
	}
	must(t, db.DeleteSession(t.Context(), "s1")) // logging out twice is fine
}

func testSessionDeleteExpired(t *testing.T, db *store.DB) {
	withUser(t, db)
	newSession(t, db, "old", T0.Add(time.Minute))
	newSession(t, db, "edge", T0.Add(time.Hour))
	newSession(t, db, "live", T0.Add(time.Hour+time.Millisecond))
	n, err := db.DeleteExpiredSessions(t.Context(), T0.Add(time.Hour))
	must(t, err)
	if n != 2 {
		t.Fatalf("DeleteExpiredSessions removed %d, want 2 (old and edge)", n)
	}
	if _, _, err := db.SessionByTokenHash(t.Context(), "live", T0); err != nil {
		t.Fatalf("live session removed: %v", err)
	}
	for _, h := range []string{"old", "edge"} {
		_, _, err := db.SessionByTokenHash(t.Context(), h, T0) // would still be valid at T0 if it existed
		WantCode(t, err, errcode.NotFound)
	}
	if n, err := db.DeleteExpiredSessions(t.Context(), T0.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("second DeleteExpiredSessions = %d, %v; want 0", n, err)
	}
}

// ---- enrollment tokens -----------------------------------------------------

func testTokensCRUD(t *testing.T, db *store.DB) {
	older := &store.EnrollmentToken{ID: "t1", SecretHash: "h1", GroupID: store.GroupLostFound, Description: "first",
		ExpiresAt: T0.Add(time.Hour), UsesAllowed: 3, CreatedBy: "alice", CreatedAt: T0}
	newer := &store.EnrollmentToken{ID: "t2", SecretHash: "h2", GroupID: store.GroupAll,
		ExpiresAt: T0.Add(2 * time.Hour), CreatedBy: "cli", CreatedAt: T0.Add(time.Minute)}
	must(t, db.CreateEnrollmentToken(t.Context(), older))
	must(t, db.CreateEnrollmentToken(t.Context(), newer))

	WantCode(t, db.CreateEnrollmentToken(t.Context(), &store.EnrollmentToken{ID: "t1", SecretHash: "h3", GroupID: store.GroupAll,
		ExpiresAt: T0, CreatedAt: T0}), errcode.Conflict)
	WantCode(t, db.CreateEnrollmentToken(t.Context(), &store.EnrollmentToken{ID: "t3", SecretHash: "h1", GroupID: store.GroupAll,
		ExpiresAt: T0, CreatedAt: T0}), errcode.Conflict)

	got := token(t, db, "t1")
	if got.SecretHash != "h1" || got.GroupID != store.GroupLostFound || got.Description != "first" || !got.ExpiresAt.Equal(older.ExpiresAt) ||
		got.UsesAllowed != 3 || got.Uses != 0 || got.CreatedBy != "alice" || !got.CreatedAt.Equal(T0) || !got.RevokedAt.IsZero() {
		t.Fatalf("token t1 = %+v", got)
	}
	_, err := db.EnrollmentTokenByID(t.Context(), "nope")
	WantCode(t, err, errcode.NotFound)

	all, err := db.ListEnrollmentTokens(t.Context())
	must(t, err)
	if len(all) != 2 || all[0].ID != "t2" || all[1].ID != "t1" {
		t.Fatalf("ListEnrollmentTokens = %+v, want t2 then t1 (newest first)", all)
	}

	must(t, db.RevokeEnrollmentToken(t.Context(), "t1", T0.Add(time.Minute)))
	must(t, db.RevokeEnrollmentToken(t.Context(), "t1", T0.Add(time.Hour))) // keeps the first time
	if r := token(t, db, "t1").RevokedAt; !r.Equal(T0.Add(time.Minute)) {
		t.Fatalf("RevokedAt = %v, want the first revocation time", r)
	}
	if !token(t, db, "t2").RevokedAt.IsZero() {
		t.Fatal("revoking t1 revoked t2")
	}
	WantCode(t, db.RevokeEnrollmentToken(t.Context(), "nope", T0), errcode.NotFound)
}

func testCheckTokenRefusals(t *testing.T, db *store.DB) {
	ok := NewToken(t, db, store.GroupLostFound, 2)
	got, err := db.CheckEnrollmentToken(t.Context(), ok.SecretHash, T0)
	must(t, err)
	if got.ID != ok.ID {
		t.Fatalf("CheckEnrollmentToken returned %+v", got)
	}

	revoked := NewToken(t, db, store.GroupLostFound, 0)
	must(t, db.RevokeEnrollmentToken(t.Context(), revoked.ID, T0))
	usedUp := NewToken(t, db, store.GroupLostFound, 1)
	Enroll(t, db, usedUp, T0, store.Computer{})
	for _, tc := range []struct {
		name, hash string
		now        time.Time
		why        string
	}{
		{"unknown", "no-such-hash", T0, "unknown"},
		{"expired exactly at expiry", ok.SecretHash, ok.ExpiresAt, "expired"},
		{"expired later", ok.SecretHash, ok.ExpiresAt.Add(time.Hour), "expired"},
		{"revoked", revoked.SecretHash, T0, "revoked"},
		{"used up", usedUp.SecretHash, T0, "used up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := db.CheckEnrollmentToken(t.Context(), tc.hash, tc.now)
			WantCode(t, err, errcode.Unauthorized)
			if msg := errcode.Message(err); !strings.Contains(msg, tc.why) {
				t.Fatalf("message %q does not say %q", msg, tc.why)
			}
		})
	}
	if u := token(t, db, ok.ID).Uses; u != 0 {
		t.Fatalf("CheckEnrollmentToken changed uses to %d", u)
	}
}

func testEnrollConsumesOneUse(t *testing.T, db *store.DB) {
	servers, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	must(t, err)
	tok := NewToken(t, db, servers.ID, 3)
	c := store.Computer{ID: "c1", Name: "web-1", Hostname: "web-1.example", Instance: "blue", GroupID: store.GroupLostFound,
		Platform: "linux", AgentVersion: "1.2.3", HardwareFingerprint: "00112233445566778899aabbccddeeff"}
	cert := &store.AgentCertificate{Serial: "abcd01", ComputerID: "c1", IssuedAt: T0, NotAfter: T0.Add(24 * time.Hour)}
	now := T0.Add(time.Minute)
	must(t, db.EnrollComputer(t.Context(), tok.SecretHash, now, &c, cert))
	if c.GroupID != servers.ID || !c.EnrolledAt.Equal(now) {
		t.Fatalf("EnrollComputer did not set group/enrolled time on its argument: %+v", c)
	}
	if u := token(t, db, tok.ID).Uses; u != 1 {
		t.Fatalf("token uses = %d after one enrollment, want 1", u)
	}
	got := computer(t, db, "c1")
	want := store.Computer{ID: "c1", Name: "web-1", Hostname: "web-1.example", Instance: "blue", GroupID: servers.ID,
		Status: store.StatusOffline, Platform: "linux", AgentVersion: "1.2.3", HardwareFingerprint: c.HardwareFingerprint, EnrolledAt: now}
	if !equalComputer(got, &want) {
		t.Fatalf("stored computer\n got %+v\nwant %+v", got, &want)
	}
	gotCert, err := db.AgentCertificateBySerial(t.Context(), "abcd01")
	must(t, err)
	if gotCert.ComputerID != "c1" {
		t.Fatalf("certificate recorded for %q", gotCert.ComputerID)
	}
	Enroll(t, db, tok, now, store.Computer{})
	if u := token(t, db, tok.ID).Uses; u != 2 {
		t.Fatalf("token uses = %d after two enrollments, want 2", u)
	}
}

func equalComputer(a, b *store.Computer) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Hostname == b.Hostname && a.Instance == b.Instance && a.GroupID == b.GroupID &&
		a.Status == b.Status && a.LastSeen.Equal(b.LastSeen) && a.ConnectedSince.Equal(b.ConnectedSince) && a.Platform == b.Platform &&
		a.OSName == b.OSName && a.OSVersion == b.OSVersion && a.AgentVersion == b.AgentVersion &&
		a.HardwareFingerprint == b.HardwareFingerprint && a.CloneSuspected == b.CloneSuspected && a.CloneReason == b.CloneReason &&
		a.EnrolledAt.Equal(b.EnrolledAt) && a.RevokedAt.Equal(b.RevokedAt)
}

func testEnrollUsedUp(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 2)
	Enroll(t, db, tok, T0, store.Computer{})
	Enroll(t, db, tok, T0, store.Computer{})
	c := store.Computer{ID: "third", Name: "third", Hostname: "third", HardwareFingerprint: "ff"}
	err := db.EnrollComputer(t.Context(), tok.SecretHash, T0, &c, &store.AgentCertificate{Serial: "s3", IssuedAt: T0, NotAfter: T0})
	WantCode(t, err, errcode.Unauthorized)
	if !strings.Contains(errcode.Message(err), "used up") {
		t.Fatalf("message %q does not say the token is used up", errcode.Message(err))
	}
	if u := token(t, db, tok.ID).Uses; u != 2 {
		t.Fatalf("uses = %d, want 2", u)
	}
	_, err = db.ComputerByID(t.Context(), "third")
	WantCode(t, err, errcode.NotFound)
	_, err = db.AgentCertificateBySerial(t.Context(), "s3")
	WantCode(t, err, errcode.NotFound)
}

func testEnrollRefusesUnusable(t *testing.T, db *store.DB) {
	revoked := NewToken(t, db, store.GroupLostFound, 0)
	must(t, db.RevokeEnrollmentToken(t.Context(), revoked.ID, T0))
	live := NewToken(t, db, store.GroupLostFound, 0)
	for _, tc := range []struct {
		name, hash string
		now        time.Time
	}{
		{"unknown", "no-such-hash", T0},
		{"revoked", revoked.SecretHash, T0},
		{"expired", live.SecretHash, live.ExpiresAt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := store.Computer{ID: "c-" + tc.name, Name: "n", Hostname: "n", HardwareFingerprint: "ff"}
			err := db.EnrollComputer(t.Context(), tc.hash, tc.now, &c, &store.AgentCertificate{Serial: "s-" + tc.name, IssuedAt: T0, NotAfter: T0})
			WantCode(t, err, errcode.Unauthorized)
		})
	}
	if _, total := list(t, db, store.ComputerFilter{IncludeRevoked: true}); total != 0 {
		t.Fatalf("%d computers after refused enrollments, want 0", total)
	}
	for _, tok := range []*store.EnrollmentToken{revoked, live} {
		if u := token(t, db, tok.ID).Uses; u != 0 {
			t.Fatalf("token %s uses = %d after refusals, want 0", tok.ID, u)
		}
	}
}

func testUnlimitedToken(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	for range 7 {
		Enroll(t, db, tok, T0, store.Computer{})
	}
	if u := token(t, db, tok.ID).Uses; u != 7 {
		t.Fatalf("uses = %d, want 7", u)
	}
	if _, err := db.CheckEnrollmentToken(t.Context(), tok.SecretHash, T0); err != nil {
		t.Fatalf("unlimited token refused after 7 uses: %v", err)
	}
}

func testConcurrentEnroll(t *testing.T, db *store.DB) {
	const workers, uses = 20, 5
	tok := NewToken(t, db, store.GroupLostFound, uses)
	ConcurrentEnroll(t, []*store.DB{db}, tok, workers, uses)
}

// ConcurrentEnroll enrolls workers computers at once with tok (which allows
// uses enrollments), spreading the goroutines over dbs (handles on the same
// database), and checks that exactly uses succeed and the others are refused
// as unauthorized.
func ConcurrentEnroll(t *testing.T, dbs []*store.DB, tok *store.EnrollmentToken, workers, uses int) {
	t.Helper()
	start := make(chan struct{})
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		db := dbs[i%len(dbs)]
		id := fmt.Sprintf("race-%02d", i)
		wg.Go(func() {
			<-start
			c := store.Computer{ID: id, Name: id, Hostname: id, HardwareFingerprint: id}
			errs <- db.EnrollComputer(t.Context(), tok.SecretHash, T0, &c,
				&store.AgentCertificate{Serial: "serial-" + id, ComputerID: id, IssuedAt: T0, NotAfter: T0.Add(time.Hour)})
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch errcode.Of(err) {
		case "":
			ok++
		case errcode.Unauthorized:
		default:
			t.Errorf("concurrent enrollment failed with something other than unauthorized: %v", err)
		}
	}
	if ok != uses {
		t.Errorf("%d of %d concurrent enrollments succeeded, want exactly %d", ok, workers, uses)
	}
	if u := token(t, dbs[0], tok.ID).Uses; u != uses {
		t.Errorf("token uses = %d, want %d", u, uses)
	}
	if _, total := list(t, dbs[0], store.ComputerFilter{IncludeRevoked: true}); total != uses {
		t.Errorf("%d computers enrolled, want %d", total, uses)
	}
}

// ---- clones ----------------------------------------------------------------

func testCloneMarksBoth(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	const fp = "0123456789abcdef0123456789abcdef"
	first := Enroll(t, db, tok, T0, store.Computer{ID: "id-first", Name: "first", HardwareFingerprint: fp})
	if first.CloneSuspected || first.CloneReason != "" {
		t.Fatalf("a lone computer is clone_suspected: %+v", first)
	}
	other := Enroll(t, db, tok, T0, store.Computer{ID: "id-other", Name: "other"})

	c := store.Computer{ID: "id-second", Name: "second", Hostname: "second", HardwareFingerprint: fp}
	must(t, db.EnrollComputer(t.Context(), tok.SecretHash, T0, &c, &store.AgentCertificate{Serial: "s2", IssuedAt: T0, NotAfter: T0}))
	if !c.CloneSuspected {
		t.Fatal("EnrollComputer did not mark its argument clone_suspected")
	}
	second := computer(t, db, "id-second")
	first = computer(t, db, "id-first")
	for _, tc := range []struct {
		c       *store.Computer
		mention []string
	}{
		{second, []string{"first", "id-first"}},
		{first, []string{"second", "id-second"}},
	} {
		if !tc.c.CloneSuspected {
			t.Errorf("%s is not clone_suspected", tc.c.Name)
		}
		for _, m := range tc.mention {
			if !strings.Contains(tc.c.CloneReason, m) {
				t.Errorf("%s's clone reason %q does not mention %q", tc.c.Name, tc.c.CloneReason, m)
			}
		}
	}
	if o := computer(t, db, other.ID); o.CloneSuspected || o.CloneReason != "" {
		t.Errorf("a computer with another fingerprint was marked: %+v", o)
	}
	// Nothing was merged: both exist.
	if _, total := list(t, db, store.ComputerFilter{}); total != 3 {
		t.Errorf("%d computers, want 3", total)
	}
}

func testCloneIgnoresRevoked(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	const fp = "fedcba9876543210fedcba9876543210"
	old := Enroll(t, db, tok, T0, store.Computer{Name: "old", HardwareFingerprint: fp})
	must(t, db.RevokeComputer(t.Context(), old.ID, T0.Add(time.Minute)))
	fresh := Enroll(t, db, tok, T0.Add(time.Hour), store.Computer{Name: "reinstalled", HardwareFingerprint: fp})
	if fresh.CloneSuspected || fresh.CloneReason != "" {
		t.Fatalf("re-enrolled computer marked as clone of a revoked one: %+v", fresh)
	}
	if o := computer(t, db, old.ID); o.CloneSuspected {
		t.Fatalf("revoked computer marked as clone: %+v", o)
	}
}

// ---- check-ins -------------------------------------------------------------

// ComputersByID reads what exists of many ids, 500 per query: the ones on
// both sides of a chunk's edge, none for unknown ids.
func testComputersByID(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	first := Enroll(t, db, tok, T0, store.Computer{Name: "first"})
	last := Enroll(t, db, tok, T0, store.Computer{Name: "last"})
	ids := []string{first.ID}
	for i := range 599 {
		ids = append(ids, "unknown-"+strconv.Itoa(i))
	}
	ids = append(ids, last.ID)
	got, err := db.ComputersByID(t.Context(), ids)
	must(t, err)
	if len(got) != 2 || got[first.ID] == nil || got[first.ID].Name != "first" || got[last.ID] == nil || got[last.ID].Name != "last" {
		t.Fatalf("ComputersByID = %v, want first and last only", got)
	}
	if got, err := db.ComputersByID(t.Context(), nil); err != nil || len(got) != 0 {
		t.Fatalf("ComputersByID(none) = %v, %v", got, err)
	}
}

func oneComputer(t *testing.T, db *store.DB) *store.Computer {
	t.Helper()
	return Enroll(t, db, NewToken(t, db, store.GroupLostFound, 0), T0, store.Computer{Name: "pc", AgentVersion: "0.9"})
}

func testCheckInSections(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	first, second := T0.Add(time.Minute), T0.Add(2*time.Minute)
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: first, Sections: []store.InventorySection{
		{Section: "os", Hash: []byte{1, 1}, Data: `{"name":"Debian"}`},
		{Section: "hardware", Hash: []byte{2, 2}, Data: `{"cpus":4}`},
	}})
	must(t, err)
	_, err = db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: second, Sections: []store.InventorySection{
		{Section: "os", Hash: []byte{3, 3, 3}, Data: `{"name":"Ubuntu"}`},
	}})
	must(t, err)

	hashes, err := db.SectionHashes(t.Context(), c.ID)
	must(t, err)
	if len(hashes) != 2 || !bytes.Equal(hashes["os"], []byte{3, 3, 3}) || !bytes.Equal(hashes["hardware"], []byte{2, 2}) {
		t.Fatalf("SectionHashes = %v", hashes)
	}
	secs, err := db.InventorySections(t.Context(), c.ID)
	must(t, err)
	want := []store.InventorySection{
		{Section: "hardware", Hash: []byte{2, 2}, Data: `{"cpus":4}`, UpdatedAt: first},
		{Section: "os", Hash: []byte{3, 3, 3}, Data: `{"name":"Ubuntu"}`, UpdatedAt: second},
	}
	if len(secs) != len(want) {
		t.Fatalf("InventorySections = %+v", secs)
	}
	for i := range want {
		g, w := secs[i], want[i]
		if g.Section != w.Section || !bytes.Equal(g.Hash, w.Hash) || g.Data != w.Data || !g.UpdatedAt.Equal(w.UpdatedAt) {
			t.Errorf("section %d = %+v, want %+v", i, g, w)
		}
	}
	// Another computer's inventory is separate.
	other := Enroll(t, db, NewToken(t, db, store.GroupLostFound, 0), T0, store.Computer{})
	if h, err := db.SectionHashes(t.Context(), other.ID); err != nil || len(h) != 0 {
		t.Fatalf("SectionHashes(other) = %v, %v; want empty", h, err)
	}
	if s, err := db.InventorySections(t.Context(), other.ID); err != nil || len(s) != 0 {
		t.Fatalf("InventorySections(other) = %v, %v; want empty", s, err)
	}
}

func ev(id, typ string, at time.Time) store.Event {
	return store.Event{ID: id, Type: typ, OccurredAt: at, Data: `{"id":"` + id + `"}`}
}

func testCheckInEventsOnce(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	other := Enroll(t, db, NewToken(t, db, store.GroupLostFound, 0), T0, store.Computer{})
	apply := func(id string, now time.Time, es ...store.Event) int {
		t.Helper()
		n, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: id, Now: now, Events: es})
		must(t, err)
		return n
	}
	e1, e2, e3 := ev("e1", "agent.started", T0), ev("e2", "agent.stopped", T0.Add(time.Second)), ev("e3", "x", T0.Add(2*time.Second))
	if n := apply(c.ID, T0.Add(time.Minute), e1, e2); n != 2 {
		t.Fatalf("first check-in inserted %d, want 2", n)
	}
	if n := apply(c.ID, T0.Add(2*time.Minute), e1, e2); n != 0 {
		t.Fatalf("retried check-in inserted %d, want 0", n)
	}
	changed := e1
	changed.Data = `{"changed":true}`
	if n := apply(c.ID, T0.Add(3*time.Minute), changed, e3); n != 1 {
		t.Fatalf("check-in with one new event inserted %d, want 1", n)
	}
	if n := apply(other.ID, T0.Add(3*time.Minute), e1); n != 1 {
		t.Fatalf("the same event id on another computer inserted %d, want 1", n)
	}
	es, total, err := db.ComputerEvents(t.Context(), c.ID, store.EventFilter{})
	must(t, err)
	if total != 3 || len(es) != 3 {
		t.Fatalf("ComputerEvents total %d, %d events; want 3", total, len(es))
	}
	byID := map[string]store.Event{}
	for _, e := range es {
		byID[e.ID] = e
	}
	if got := byID["e1"]; got.Data != e1.Data || !got.ReceivedAt.Equal(T0.Add(time.Minute)) || got.ComputerID != c.ID || got.Type != "agent.started" {
		t.Fatalf("e1 was overwritten or stored wrongly: %+v", got)
	}
	if got := byID["e3"]; !got.ReceivedAt.Equal(T0.Add(3*time.Minute)) || !got.OccurredAt.Equal(e3.OccurredAt) {
		t.Fatalf("e3 = %+v", got)
	}
	if _, total, _ := db.ComputerEvents(t.Context(), other.ID, store.EventFilter{}); total != 1 {
		t.Fatalf("other computer has %d events, want 1", total)
	}
}

func testCheckInSummary(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	if c.AgentVersion != "0.9" || c.Hostname != "pc" {
		t.Fatalf("enrolled computer = %+v", c)
	}
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0, Summary: store.ComputerSummary{
		Hostname: "pc.example", OSName: "Debian", OSVersion: "12", AgentVersion: "1.0",
	}})
	must(t, err)
	got := computer(t, db, c.ID)
	if got.Hostname != "pc.example" || got.OSName != "Debian" || got.OSVersion != "12" || got.AgentVersion != "1.0" {
		t.Fatalf("after full summary: %+v", got)
	}
	_, err = db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0, Summary: store.ComputerSummary{OSVersion: "13"}})
	must(t, err)
	got = computer(t, db, c.ID)
	if got.Hostname != "pc.example" || got.OSName != "Debian" || got.OSVersion != "13" || got.AgentVersion != "1.0" {
		t.Fatalf("a partial summary cleared other fields: %+v", got)
	}
	_, err = db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0})
	must(t, err)
	if again := computer(t, db, c.ID); !equalComputer(again, got) {
		t.Fatalf("an empty check-in changed the computer:\n got %+v\nwant %+v", again, got)
	}
	if got.Name != "pc" {
		t.Fatalf("the summary renamed the computer to %q", got.Name)
	}
}

// ---- events ----------------------------------------------------------------

func testEventsNewestFirst(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0, Events: []store.Event{
		ev("mid", "a", T0.Add(2*time.Second)),
		ev("old", "a", T0.Add(time.Second)),
		ev("new", "a", T0.Add(3*time.Second)),
		ev("tie-1", "a", T0), // same time: the later stored comes first
		ev("tie-2", "a", T0),
	}})
	must(t, err)
	es, total, err := db.ComputerEvents(t.Context(), c.ID, store.EventFilter{})
	must(t, err)
	if want := []string{"new", "mid", "old", "tie-2", "tie-1"}; !slices.Equal(eventIDs(es), want) || total != 5 {
		t.Fatalf("events = %q total %d, want %q total 5", eventIDs(es), total, want)
	}
	if es[0].Seq <= 0 || es[0].Seq == es[1].Seq {
		t.Fatalf("sequence numbers not assigned: %d, %d", es[0].Seq, es[1].Seq)
	}
	if es, total, err := db.ComputerEvents(t.Context(), "nope", store.EventFilter{}); err != nil || total != 0 || len(es) != 0 {
		t.Fatalf("events of an unknown computer = %v, %d, %v", es, total, err)
	}
}

func testEventsTypeFilter(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	types := []string{"agent.started", "agent.stopped", "agent", "agentx.started", "inventory.changed", "a_b.c", "axb.c", "a%.c", "aa.c"}
	var events []store.Event
	for i, typ := range types {
		events = append(events, ev(typ, typ, T0.Add(time.Duration(i)*time.Second)))
	}
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0, Events: events})
	must(t, err)
	for _, tc := range []struct {
		filter string
		want   []string // newest first
	}{
		{"", []string{"aa.c", "a%.c", "axb.c", "a_b.c", "inventory.changed", "agentx.started", "agent", "agent.stopped", "agent.started"}},
		{"agent.started", []string{"agent.started"}},
		{"agent", []string{"agent"}},
		{"agent.", []string{"agent.stopped", "agent.started"}},
		{"inventory.", []string{"inventory.changed"}},
		{"a_b.", []string{"a_b.c"}}, // _ is literal in a prefix
		{"a%.", []string{"a%.c"}},   // so is %
		{"agent.st", nil},           // no trailing dot: exact match only
		{"nope.", nil},
		{".", nil},
	} {
		es, total, err := db.ComputerEvents(t.Context(), c.ID, store.EventFilter{Type: tc.filter})
		if err != nil {
			t.Fatalf("filter %q: %v", tc.filter, err)
		}
		if got := eventIDs(es); !slices.Equal(got, tc.want) || total != len(tc.want) {
			t.Errorf("filter %q = %q total %d, want %q", tc.filter, got, total, tc.want)
		}
	}
}

func testEventsPagination(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	var events []store.Event
	for i := range 7 {
		events = append(events, ev(fmt.Sprintf("e%d", i), "t", T0.Add(time.Duration(i)*time.Second)))
	}
	_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0, Events: events})
	must(t, err)
	for _, tc := range []struct {
		limit, offset int
		want          []string
	}{
		{0, 0, []string{"e6", "e5", "e4", "e3", "e2", "e1", "e0"}},
		{3, 0, []string{"e6", "e5", "e4"}},
		{3, 3, []string{"e3", "e2", "e1"}},
		{3, 6, []string{"e0"}},
		{3, 7, nil},
		{2, -5, []string{"e6", "e5"}},
	} {
		es, total, err := db.ComputerEvents(t.Context(), c.ID, store.EventFilter{Limit: tc.limit, Offset: tc.offset})
		must(t, err)
		if got := eventIDs(es); !slices.Equal(got, tc.want) || total != 7 {
			t.Errorf("limit %d offset %d = %q total %d, want %q total 7", tc.limit, tc.offset, got, total, tc.want)
		}
	}
}

// ---- listing computers -----------------------------------------------------

// fleet enrolls four computers whose fields order differently for every sort:
//
//	id  name     hostname             enrolled  last seen  status   os
//	c1  delta    ws-017.corp.example  +3h       +1m        online   Fedora
//	c2  alpha    db-1                 +1h       never      offline  Windows
//	c3  charlie  build-9              +2h       +3m        offline  Debian
//	c4  bravo    ws-018.corp.example  +4h       +2m        online   Ubuntu
func fleet(t *testing.T, db *store.DB) {
	t.Helper()
	tok := NewToken(t, db, store.GroupLostFound, 0)
	for _, s := range []struct {
		id, name, host, os string
		enrolled           time.Duration
		engine             uint64 // 0: not reported
	}{
		{"c1", "delta", "ws-017.corp.example", "Fedora", 3 * time.Hour, 9},
		{"c2", "alpha", "db-1", "Windows", 1 * time.Hour, 3},
		{"c3", "charlie", "build-9", "Debian", 2 * time.Hour, 0},
		{"c4", "bravo", "ws-018.corp.example", "Ubuntu", 4 * time.Hour, 5},
	} {
		Enroll(t, db, tok, T0.Add(s.enrolled), store.Computer{ID: s.id, Name: s.name, Hostname: s.host})
		sum := store.ComputerSummary{OSName: s.os}
		if s.engine > 0 {
			sum.Engine = &store.EngineReport{Version: s.engine, UpdateState: "idle", LastSuccess: T0}
		}
		_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: s.id, Now: T0, Summary: sum})
		must(t, err)
	}
	seen := T0.Add(10 * time.Hour)
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{
		{ComputerID: "c1", Status: store.StatusOnline, LastSeen: seen.Add(time.Minute), ConnectedSince: seen},
		{ComputerID: "c4", Status: store.StatusOnline, LastSeen: seen.Add(2 * time.Minute), ConnectedSince: seen},
		{ComputerID: "c3", LastSeen: seen.Add(3 * time.Minute)},
	}))
}

func testListEngine(t *testing.T, db *store.DB) {
	fleet(t, db)
	for _, tc := range []struct {
		below uint64
		want  []string
	}{
		{0, []string{"c1", "c2", "c3", "c4"}},
		{9, []string{"c2", "c4"}}, // c3 never reported: not known to be behind
		{5, []string{"c2"}},
		{3, nil},
		{1 << 63, []string{"c1", "c2", "c4"}},
	} {
		cs, total := list(t, db, store.ComputerFilter{EngineBelow: tc.below})
		if got := sortedIDs(cs); !slices.Equal(got, tc.want) || total != len(tc.want) {
			t.Errorf("EngineBelow %d = %q total %d, want %q", tc.below, got, total, tc.want)
		}
	}
	c, err := db.ComputerByID(t.Context(), "c4")
	must(t, err)
	if e := c.Engine; e.Version != 5 || e.UpdateState != "idle" || !e.LastSuccess.Equal(T0) || e.LastError != "" {
		t.Fatalf("engine report %+v", e)
	}
	// A check-in without an engine report leaves it; a new report replaces it.
	_, err = db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: "c4", Now: T0.Add(time.Hour), Summary: store.ComputerSummary{OSName: "Ubuntu 26.04"}})
	must(t, err)
	c, _ = db.ComputerByID(t.Context(), "c4")
	if c.Engine.Version != 5 || c.OSName != "Ubuntu 26.04" {
		t.Fatalf("engine report after a check-in without one: %+v (os %q)", c.Engine, c.OSName)
	}
	_, err = db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: "c4", Now: T0.Add(2 * time.Hour),
		Summary: store.ComputerSummary{Engine: &store.EngineReport{Version: 5, UpdateState: "failing", LastError: strings.Repeat("x", 2000)}}})
	must(t, err)
	c, _ = db.ComputerByID(t.Context(), "c4")
	if e := c.Engine; e.UpdateState != "failing" || len(e.LastError) != 512 || !e.LastSuccess.IsZero() {
		t.Fatalf("replaced engine report: state %q, error %d bytes, last success %v", e.UpdateState, len(e.LastError), e.LastSuccess)
	}
}

func testListNameFilter(t *testing.T, db *store.DB) {
	fleet(t, db)
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"alpha", []string{"c2"}},
		{"ALPHA", []string{"c2"}},
		{"lph", []string{"c2"}},
		{"ha", []string{"c2", "c3"}},
		{"WS-01", []string{"c1", "c4"}}, // host names
		{"018.CORP", []string{"c4"}},
		{"Build", []string{"c3"}},
		{"zulu", nil},
	} {
		cs, total := list(t, db, store.ComputerFilter{Name: tc.name})
		if got := sortedIDs(cs); !slices.Equal(got, tc.want) || total != len(tc.want) {
			t.Errorf("Name %q = %q total %d, want %q", tc.name, got, total, tc.want)
		}
	}
}

func testListNameLikeMeta(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	for id, name := range map[string]string{"m1": "a%b", "m2": "a_b", "m3": "axb", "m4": `a\b`, "m5": "Ünïcødé-PC"} {
		Enroll(t, db, tok, T0, store.Computer{ID: id, Name: name, Hostname: "host-" + id})
	}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"%", []string{"m1"}},
		{"_", []string{"m2"}},
		{"a%b", []string{"m1"}},
		{"a_b", []string{"m2"}},
		{"A_B", []string{"m2"}},
		{`\`, []string{"m4"}},
		{`a\b`, []string{"m4"}},
		{"b", []string{"m1", "m2", "m3", "m4"}},
		{"HOST-M", []string{"m1", "m2", "m3", "m4", "m5"}},
		// Non-ASCII text always matches itself; whether Ü also matches ü is
		// up to the backend's case folding and not pinned here.
		{"Ünïcødé", []string{"m5"}},
		{"ødé-pc", []string{"m5"}},
	} {
		cs, total := list(t, db, store.ComputerFilter{Name: tc.name})
		if got := sortedIDs(cs); !slices.Equal(got, tc.want) || total != len(tc.want) {
			t.Errorf("Name %q = %q total %d, want %q", tc.name, got, total, tc.want)
		}
	}
}

func testListStatusFilter(t *testing.T, db *store.DB) {
	fleet(t, db)
	for _, tc := range []struct {
		status string
		want   []string
	}{
		{"", []string{"c1", "c2", "c3", "c4"}},
		{store.StatusOnline, []string{"c1", "c4"}},
		{store.StatusOffline, []string{"c2", "c3"}},
	} {
		cs, total := list(t, db, store.ComputerFilter{Status: tc.status})
		if got := sortedIDs(cs); !slices.Equal(got, tc.want) || total != len(tc.want) {
			t.Errorf("Status %q = %q total %d, want %q", tc.status, got, total, tc.want)
		}
	}
	// Filters combine.
	cs, total := list(t, db, store.ComputerFilter{Status: store.StatusOnline, Name: "ws-018"})
	if got := sortedIDs(cs); !slices.Equal(got, []string{"c4"}) || total != 1 {
		t.Errorf("online + name ws-018 = %q total %d, want [c4]", got, total)
	}
}

func testListInvalid(t *testing.T, db *store.DB) {
	fleet(t, db)
	for _, f := range []store.ComputerFilter{
		{Status: "busy"},
		{Status: "ONLINE"},
		{Sort: "hostname"},
		{Sort: "-bogus"},
		{Sort: "name; DROP TABLE computers"},
		{Sort: "--name"},
		{Sort: "+name"},
	} {
		cs, total, err := db.ListComputers(t.Context(), f)
		if errcode.Of(err) != errcode.Invalid {
			t.Errorf("ListComputers(%+v) = %d computers, total %d, %v; want invalid", f, len(cs), total, err)
		}
	}
	if _, total := list(t, db, store.ComputerFilter{}); total != 4 {
		t.Fatalf("total %d after invalid filters, want 4", total)
	}
}

func testListGroupFilter(t *testing.T, db *store.DB) {
	servers, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	must(t, err)
	web, err := db.CreateGroup(t.Context(), servers.ID, "Web")
	must(t, err)
	Enroll(t, db, NewToken(t, db, store.GroupLostFound, 0), T0, store.Computer{ID: "lf"})
	Enroll(t, db, NewToken(t, db, servers.ID, 0), T0, store.Computer{ID: "srv"})
	Enroll(t, db, NewToken(t, db, web.ID, 0), T0, store.Computer{ID: "web"})
	tree := groups(t, db)
	for _, tc := range []struct {
		name   string
		groups []string
		want   []string
	}{
		{"nil means all", nil, []string{"lf", "srv", "web"}},
		{"empty means none", []string{}, nil},
		{"one group, members only", []string{servers.ID}, []string{"srv"}},
		{"subtree", tree.Descendants(servers.ID), []string{"srv", "web"}},
		{"two groups", []string{store.GroupLostFound, web.ID}, []string{"lf", "web"}},
		{"All has no direct members", []string{store.GroupAll}, nil},
		{"unknown group", []string{"nope"}, nil},
	} {
		cs, total := list(t, db, store.ComputerFilter{GroupIDs: tc.groups})
		if got := sortedIDs(cs); !slices.Equal(got, tc.want) || total != len(tc.want) {
			t.Errorf("%s: GroupIDs %q = %q total %d, want %q", tc.name, tc.groups, got, total, tc.want)
		}
	}
}

func testListSort(t *testing.T, db *store.DB) {
	fleet(t, db)
	if !slices.Equal(store.ComputerSortFields(), []string{"name", "last_seen", "status", "enrolled_at", "os_name", "engine"}) {
		t.Fatalf("ComputerSortFields = %q: update this test's table", store.ComputerSortFields())
	}
	asc := map[string][]string{
		"":            {"c2", "c4", "c3", "c1"}, // name
		"name":        {"c2", "c4", "c3", "c1"},
		"last_seen":   {"c2", "c1", "c4", "c3"}, // never seen sorts first
		"enrolled_at": {"c2", "c3", "c1", "c4"},
		"os_name":     {"c3", "c1", "c4", "c2"},
		"engine":      {"c3", "c2", "c4", "c1"}, // never reported sorts first
	}
	for field, want := range asc {
		if cs, _ := list(t, db, store.ComputerFilter{Sort: field}); !slices.Equal(ids(cs), want) {
			t.Errorf("Sort %q = %q, want %q", field, ids(cs), want)
		}
		if field == "" {
			continue
		}
		rev := slices.Clone(want)
		slices.Reverse(rev)
		if cs, _ := list(t, db, store.ComputerFilter{Sort: "-" + field}); !slices.Equal(ids(cs), rev) {
			t.Errorf("Sort %q = %q, want %q", "-"+field, ids(cs), rev)
		}
	}
	// Status has ties; they are broken by id ascending in both directions.
	if cs, _ := list(t, db, store.ComputerFilter{Sort: "status"}); !slices.Equal(ids(cs), []string{"c2", "c3", "c1", "c4"}) {
		t.Errorf("Sort status = %q", ids(cs))
	}
	if cs, _ := list(t, db, store.ComputerFilter{Sort: "-status"}); !slices.Equal(ids(cs), []string{"c1", "c4", "c2", "c3"}) {
		t.Errorf("Sort -status = %q", ids(cs))
	}
}

func testListPaging(t *testing.T, db *store.DB) {
	fleet(t, db) // by name: c2 c4 c3 c1
	for _, tc := range []struct {
		limit, offset int
		want          []string
	}{
		{0, 0, []string{"c2", "c4", "c3", "c1"}},
		{2, 0, []string{"c2", "c4"}},
		{2, 1, []string{"c4", "c3"}},
		{2, 3, []string{"c1"}},
		{2, 4, nil},
		{-1, 0, []string{"c2", "c4", "c3", "c1"}},
		{1, -3, []string{"c2"}},
		{store.MaxLimit + 1, 0, []string{"c2", "c4", "c3", "c1"}},
	} {
		cs, total := list(t, db, store.ComputerFilter{Limit: tc.limit, Offset: tc.offset})
		if !slices.Equal(ids(cs), tc.want) || total != 4 {
			t.Errorf("limit %d offset %d = %q total %d, want %q total 4", tc.limit, tc.offset, ids(cs), total, tc.want)
		}
	}
	cs, total := list(t, db, store.ComputerFilter{Status: store.StatusOnline, Limit: 1})
	if !slices.Equal(ids(cs), []string{"c4"}) || total != 2 {
		t.Errorf("online limit 1 = %q total %d, want [c4] total 2", ids(cs), total)
	}
	// An exact name matches that name only, not names or hosts holding it.
	for name, want := range map[string][]string{"alpha": {"c2"}, "alph": nil, "db-1": nil} {
		if cs, total := list(t, db, store.ComputerFilter{ExactName: name}); !slices.Equal(ids(cs), want) || total != len(want) {
			t.Errorf("exact name %q = %q total %d, want %q", name, ids(cs), total, want)
		}
	}
}

func testListRevoked(t *testing.T, db *store.DB) {
	fleet(t, db)
	must(t, db.RevokeComputer(t.Context(), "c2", T0.Add(time.Hour)))
	cs, total := list(t, db, store.ComputerFilter{})
	if got := sortedIDs(cs); !slices.Equal(got, []string{"c1", "c3", "c4"}) || total != 3 {
		t.Errorf("without revoked = %q total %d", got, total)
	}
	cs, total = list(t, db, store.ComputerFilter{Name: "alpha"})
	if len(cs) != 0 || total != 0 {
		t.Errorf("name filter found the revoked computer: %q total %d", ids(cs), total)
	}
	cs, total = list(t, db, store.ComputerFilter{IncludeRevoked: true})
	if got := sortedIDs(cs); !slices.Equal(got, []string{"c1", "c2", "c3", "c4"}) || total != 4 {
		t.Errorf("with revoked = %q total %d", got, total)
	}
	for _, c := range cs {
		if (c.ID == "c2") == c.RevokedAt.IsZero() {
			t.Errorf("%s RevokedAt = %v", c.ID, c.RevokedAt)
		}
	}
	// The revoked ones alone, found by name too.
	for _, f := range []store.ComputerFilter{{Status: store.StatusRevoked}, {Status: store.StatusRevoked, Name: "alpha"}} {
		if cs, total = list(t, db, f); len(cs) != 1 || total != 1 || cs[0].ID != "c2" {
			t.Errorf("status revoked, name %q = %q total %d; want [c2]", f.Name, ids(cs), total)
		}
	}
}

// ---- presence --------------------------------------------------------------

func testPresenceOnlineOffline(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	if c.Status != store.StatusOffline || !c.LastSeen.IsZero() || !c.ConnectedSince.IsZero() {
		t.Fatalf("new computer = %+v", c)
	}
	must(t, db.ApplyPresence(t.Context(), nil))
	since := T0.Add(time.Minute)
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, Status: store.StatusOnline, LastSeen: since, ConnectedSince: since}}))
	got := computer(t, db, c.ID)
	if got.Status != store.StatusOnline || !got.LastSeen.Equal(since) || !got.ConnectedSince.Equal(since) {
		t.Fatalf("after online: %+v", got)
	}
	// A heartbeat: only last_seen moves.
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, LastSeen: since.Add(time.Minute)}}))
	got = computer(t, db, c.ID)
	if got.Status != store.StatusOnline || !got.LastSeen.Equal(since.Add(time.Minute)) || !got.ConnectedSince.Equal(since) {
		t.Fatalf("after heartbeat: %+v", got)
	}
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, Status: store.StatusOffline, LastSeen: since.Add(2 * time.Minute)}}))
	got = computer(t, db, c.ID)
	if got.Status != store.StatusOffline || !got.LastSeen.Equal(since.Add(2*time.Minute)) || !got.ConnectedSince.IsZero() {
		t.Fatalf("after offline: %+v", got)
	}
	// Unknown ids in a batch are ignored, not fatal to the batch.
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{
		{ComputerID: "nope", Status: store.StatusOnline, LastSeen: since},
		{ComputerID: c.ID, Status: store.StatusOnline, LastSeen: since.Add(3 * time.Minute), ConnectedSince: since.Add(3 * time.Minute)},
	}))
	if got := computer(t, db, c.ID); got.Status != store.StatusOnline {
		t.Fatalf("batch with an unknown id: %+v", got)
	}
}

func testPresenceLastSeenMonotonic(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	late := T0.Add(time.Hour)
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, LastSeen: late}}))
	for _, older := range []time.Time{T0, late.Add(-time.Millisecond), late} {
		must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, Status: store.StatusOnline, LastSeen: older, ConnectedSince: older}}))
		if got := computer(t, db, c.ID); !got.LastSeen.Equal(late) {
			t.Fatalf("last_seen moved back to %v after update at %v", got.LastSeen, older)
		}
	}
	// Within one batch too: the later of two updates wins regardless of order.
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{
		{ComputerID: c.ID, LastSeen: late.Add(2 * time.Hour)},
		{ComputerID: c.ID, LastSeen: late.Add(time.Hour)},
	}))
	if got := computer(t, db, c.ID); !got.LastSeen.Equal(late.Add(2 * time.Hour)) {
		t.Fatalf("last_seen = %v, want the later of the batch", got.LastSeen)
	}
	// A zero LastSeen leaves it alone.
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, Status: store.StatusOffline}}))
	if got := computer(t, db, c.ID); !got.LastSeen.Equal(late.Add(2*time.Hour)) || got.Status != store.StatusOffline {
		t.Fatalf("after status-only update: %+v", got)
	}
}

func testPresenceRevoked(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	must(t, db.RevokeComputer(t.Context(), c.ID, T0))
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, Status: store.StatusOnline, LastSeen: T0, ConnectedSince: T0}}))
	if got := computer(t, db, c.ID); got.Status != store.StatusOffline || !got.ConnectedSince.IsZero() {
		t.Fatalf("revoked computer came online: %+v", got)
	}
}

// A lone server reaps every earlier registration at start: whatever was
// online was connected to its previous run.
func testReapAll(t *testing.T, db *store.DB) {
	fleet(t, db) // c1 and c4 online
	n, err := db.ReapServers(t.Context(), T0.Add(1000*time.Hour))
	must(t, err)
	if n != 2 {
		t.Fatalf("ReapServers changed %d computers, want 2", n)
	}
	cs, _ := list(t, db, store.ComputerFilter{})
	for _, c := range cs {
		if c.Status != store.StatusOffline || !c.ConnectedSince.IsZero() {
			t.Errorf("%s after ReapServers: status %q connected since %v", c.ID, c.Status, c.ConnectedSince)
		}
		if c.ID == "c1" && !c.LastSeen.Equal(T0.Add(10*time.Hour+time.Minute)) {
			t.Errorf("ReapServers changed last_seen of c1 to %v", c.LastSeen)
		}
	}
	if n, err := db.ReapServers(t.Context(), T0.Add(1000*time.Hour)); err != nil || n != 0 {
		t.Fatalf("second ReapServers = %d, %v; want 0", n, err)
	}
}

func online(t *testing.T, db *store.DB, id, server string, at time.Time) {
	t.Helper()
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: id, Status: store.StatusOnline, LastSeen: at, ConnectedSince: at, ServerID: server}}))
}

// An agent that moved to server B is not taken offline by server A, which
// noticed late that its old connection had gone.
func testPresenceOwnedByServer(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	online(t, db, c.ID, "A", T0)
	online(t, db, c.ID, "B", T0.Add(time.Second))
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, Status: store.StatusOffline, ServerID: "A"}}))
	if got := computer(t, db, c.ID); got.Status != store.StatusOnline || got.ServerID != "B" {
		t.Fatalf("after A's late offline: status %q on %q, want online on B", got.Status, got.ServerID)
	}
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: c.ID, Status: store.StatusOffline, ServerID: "B"}}))
	if got := computer(t, db, c.ID); got.Status != store.StatusOffline {
		t.Fatalf("after B's offline: status %q", got.Status)
	}
}

// One batch of several computers: each status change bumps the computer
// past every earlier change (the dynamic group evaluator follows them) and
// each connection is a server event (triggers follow them), in order.
func testPresenceBatchChanges(t *testing.T, db *store.DB) {
	ctx := t.Context()
	tok := NewToken(t, db, store.GroupLostFound, 0)
	for _, id := range []string{"b1", "b2", "b3", "quiet"} {
		Enroll(t, db, tok, T0, store.Computer{ID: id, Name: id})
	}
	_, seq0, err := db.ChangedComputers(ctx, 0, 1000)
	must(t, err)
	ev0, err := db.ServerEventsAfter(ctx, 0, nil, 1000)
	must(t, err)
	must(t, db.ApplyPresence(ctx, []store.PresenceUpdate{
		{ComputerID: "b1", Status: store.StatusOnline, LastSeen: T0, ConnectedSince: T0, ServerID: "s"},
		{ComputerID: "b2", Status: store.StatusOnline, LastSeen: T0, ConnectedSince: T0.Add(time.Second), ServerID: "s"},
		{ComputerID: "b3", Status: store.StatusOffline, ServerID: "s"},
		{ComputerID: "quiet", LastSeen: T0},
	}))
	ids, seq1, err := db.ChangedComputers(ctx, seq0, 1000)
	must(t, err)
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"b1", "b2", "b3"}) || seq1 < seq0+3 {
		t.Fatalf("changed after the batch: %v (seq %d → %d), want b1, b2, b3 with a number each", ids, seq0, seq1)
	}
	evs, err := db.ServerEventsAfter(ctx, 0, []string{"agent.connected"}, 1000)
	must(t, err)
	evs = evs[countType(ev0, "agent.connected"):] // the ones before the batch
	if len(evs) != 2 || evs[0].ComputerID != "b1" || evs[1].ComputerID != "b2" || !evs[1].At.Equal(T0.Add(time.Second)) || evs[0].Seq >= evs[1].Seq {
		t.Fatalf("agent.connected events %+v, want b1 then b2 at their connection times", evs)
	}
	for id, want := range map[string]string{"b1": store.StatusOnline, "b2": store.StatusOnline, "b3": store.StatusOffline, "quiet": store.StatusOffline} {
		if c := computer(t, db, id); c.Status != want || (want == store.StatusOnline && (c.ServerID != "s" || c.ConnectedSince.IsZero())) {
			t.Errorf("%s: %+v, want %s", id, c, want)
		}
	}
}

// A batch means what its updates would one after the other, also when a
// computer comes twice: online on A, offline from A, online on B ends
// online on B; an offline from A after that does not take it offline.
func testPresenceBatchInOrder(t *testing.T, db *store.DB) {
	ctx := t.Context()
	c := oneComputer(t, db)
	_, seq0, err := db.ChangedComputers(ctx, 0, 1000)
	must(t, err)
	ev0, err := db.ServerEventsAfter(ctx, 0, []string{"agent.connected"}, 1000)
	must(t, err)
	t1, t2 := T0.Add(time.Minute), T0.Add(2*time.Minute)
	must(t, db.ApplyPresence(ctx, []store.PresenceUpdate{
		{ComputerID: c.ID, Status: store.StatusOnline, LastSeen: t1, ConnectedSince: t1, ServerID: "A"},
		{ComputerID: c.ID, LastSeen: t1.Add(time.Second)},
		{ComputerID: c.ID, Status: store.StatusOffline, ServerID: "A"},
		{ComputerID: c.ID, Status: store.StatusOnline, LastSeen: t2, ConnectedSince: t2, ServerID: "B"},
		{ComputerID: c.ID, Status: store.StatusOffline, ServerID: "A"},
		{ComputerID: c.ID, LastSeen: t1},
	}))
	got := computer(t, db, c.ID)
	if got.Status != store.StatusOnline || got.ServerID != "B" || !got.ConnectedSince.Equal(t2) || !got.LastSeen.Equal(t2) {
		t.Fatalf("after the batch: status %q on %q since %v, last seen %v; want online on B since %v, seen %v",
			got.Status, got.ServerID, got.ConnectedSince, got.LastSeen, t2, t2)
	}
	if _, seq1, err := db.ChangedComputers(ctx, seq0, 1000); err != nil || seq1 < seq0+4 {
		t.Fatalf("change numbers %d → %d (%v), want one per status change (4)", seq0, seq1, err)
	}
	evs, err := db.ServerEventsAfter(ctx, 0, []string{"agent.connected"}, 1000)
	must(t, err)
	if evs = evs[len(ev0):]; len(evs) != 2 || !evs[0].At.Equal(t1) || !evs[1].At.Equal(t2) {
		t.Fatalf("agent.connected events %+v, want two: at %v and %v", evs, t1, t2)
	}
}

func countType(evs []store.ServerEvent, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func testReapServers(t *testing.T, db *store.DB) {
	ctx := t.Context()
	tok := NewToken(t, db, store.GroupLostFound, 0)
	for _, id := range []string{"on-live", "on-dead", "on-unknown", "off"} {
		Enroll(t, db, tok, T0, store.Computer{ID: id, Name: id})
	}
	must(t, db.RegisterServer(ctx, "live", "host a", T0))
	must(t, db.RegisterServer(ctx, "dead", "host b", T0))
	must(t, db.HeartbeatServer(ctx, "live", T0.Add(time.Minute)))
	WantCode(t, db.RegisterServer(ctx, "live", "again", T0), errcode.Conflict)
	online(t, db, "on-live", "live", T0)
	online(t, db, "on-dead", "dead", T0)
	online(t, db, "on-unknown", "never-registered", T0)
	n, err := db.ReapServers(ctx, T0.Add(30*time.Second))
	must(t, err)
	if n != 2 {
		t.Errorf("ReapServers took %d computers offline, want 2 (on-dead, on-unknown)", n)
	}
	for id, want := range map[string]string{"on-live": store.StatusOnline, "on-dead": store.StatusOffline, "on-unknown": store.StatusOffline, "off": store.StatusOffline} {
		if got := computer(t, db, id).Status; got != want {
			t.Errorf("%s: status %q, want %q", id, got, want)
		}
	}
	WantCode(t, db.HeartbeatServer(ctx, "dead", T0.Add(time.Minute)), errcode.NotFound)
	must(t, db.RemoveServer(ctx, "live"))
	if n, err := db.ReapServers(ctx, T0); err != nil || n != 1 {
		t.Errorf("after the live server was removed, ReapServers = %d, %v; want its 1 computer", n, err)
	}
}

func testHeartbeatReaped(t *testing.T, db *store.DB) {
	ctx := t.Context()
	must(t, db.RegisterServer(ctx, "s", "", T0))
	_, err := db.ReapServers(ctx, T0.Add(time.Hour))
	must(t, err)
	WantCode(t, db.HeartbeatServer(ctx, "s", T0.Add(time.Hour)), errcode.NotFound)
	must(t, db.RegisterServer(ctx, "s", "", T0.Add(time.Hour)))
	must(t, db.HeartbeatServer(ctx, "s", T0.Add(time.Hour+time.Second)))
}

func testSignals(t *testing.T, db *store.DB) {
	ctx := t.Context()
	post := func(at time.Time, kind, data string) {
		t.Helper()
		must(t, db.PostSignal(ctx, &store.Signal{At: at, Origin: "A", Kind: kind, Data: data}))
	}
	post(T0, "wake", `{"ids":["old"]}`)
	post(T0.Add(time.Minute), "wake", `{"ids":["x","y"]}`)
	post(T0.Add(2*time.Minute), "disconnect", `{"ids":["z"]}`)
	sigs, err := db.SignalsSince(ctx, T0.Add(time.Minute))
	must(t, err)
	if len(sigs) != 2 || sigs[0].Kind != "wake" || sigs[1].Kind != "disconnect" || sigs[0].Origin != "A" ||
		!sigs[0].At.Equal(T0.Add(time.Minute)) || sigs[0].Seq >= sigs[1].Seq || sigs[0].Data != "" {
		t.Fatalf("SignalsSince = %+v", sigs)
	}
	if d, err := db.SignalData(ctx, sigs[0].Seq); err != nil || d != `{"ids":["x","y"]}` {
		t.Fatalf("SignalData = %q, %v", d, err)
	}
	_, err = db.SignalData(ctx, sigs[1].Seq+100)
	WantCode(t, err, errcode.NotFound)
	WantCode(t, db.PostSignal(ctx, &store.Signal{At: T0, Origin: "A", Kind: "wake", Data: strings.Repeat("x", store.MaxSignalBytes+1)}), errcode.Invalid)
	if n, err := db.DeleteSignalsBefore(ctx, T0.Add(time.Minute)); err != nil || n != 1 {
		t.Fatalf("DeleteSignalsBefore = %d, %v; want 1", n, err)
	}
	if all, _ := db.SignalsSince(ctx, time.Time{}); len(all) != 2 {
		t.Fatalf("%d signals left, want 2", len(all))
	}
}

func testOnlineElsewhere(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	for _, id := range []string{"here", "there", "gone"} {
		Enroll(t, db, tok, T0, store.Computer{ID: id, Name: id})
	}
	online(t, db, "here", "me", T0)
	online(t, db, "there", "other", T0)
	online(t, db, "gone", "other", T0)
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: "gone", Status: store.StatusOffline, ServerID: "other"}}))
	got, err := db.OnlineElsewhere(t.Context(), "me")
	must(t, err)
	if len(got) != 1 || !got["there"] {
		t.Fatalf("OnlineElsewhere(me) = %v, want only there", got)
	}
}

// ---- revocation ------------------------------------------------------------

func testRevokeComputer(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	c := store.Computer{ID: "c1", Name: "c1", Hostname: "c1", HardwareFingerprint: "aa"}
	must(t, db.EnrollComputer(t.Context(), tok.SecretHash, T0, &c, &store.AgentCertificate{Serial: "s1", IssuedAt: T0, NotAfter: T0.Add(time.Hour)}))
	keep := Enroll(t, db, tok, T0, store.Computer{})
	must(t, db.ApplyPresence(t.Context(), []store.PresenceUpdate{{ComputerID: "c1", Status: store.StatusOnline, LastSeen: T0, ConnectedSince: T0}}))

	at := T0.Add(time.Hour)
	must(t, db.RevokeComputer(t.Context(), "c1", at))
	must(t, db.RevokeComputer(t.Context(), "c1", at.Add(time.Hour))) // idempotent, keeps the first time
	got := computer(t, db, "c1")
	if !got.RevokedAt.Equal(at) || got.Status != store.StatusOffline {
		t.Fatalf("revoked computer = %+v", got)
	}
	cert, err := db.AgentCertificateBySerial(t.Context(), "s1")
	must(t, err)
	if !cert.RevokedAt.Equal(at) {
		t.Fatalf("certificate RevokedAt = %v, want %v", cert.RevokedAt, at)
	}
	if k := computer(t, db, keep.ID); !k.RevokedAt.IsZero() {
		t.Fatalf("revoking c1 revoked %s", k.ID)
	}
}

func testRevokeUnknown(t *testing.T, db *store.DB) {
	WantCode(t, db.RevokeComputer(t.Context(), "nope", T0), errcode.NotFound)
	_, err := db.ComputerByID(t.Context(), "nope")
	WantCode(t, err, errcode.NotFound)
}

func testAgentCertificateBySerial(t *testing.T, db *store.DB) {
	tok := NewToken(t, db, store.GroupLostFound, 0)
	c := store.Computer{ID: "c1", Name: "c1", Hostname: "c1", HardwareFingerprint: "aa"}
	want := store.AgentCertificate{Serial: "0a1b2c", ComputerID: "c1", IssuedAt: T0, NotAfter: T0.Add(10 * 365 * 24 * time.Hour)}
	cert := want
	must(t, db.EnrollComputer(t.Context(), tok.SecretHash, T0, &c, &cert))
	got, err := db.AgentCertificateBySerial(t.Context(), "0a1b2c")
	must(t, err)
	if got.Serial != want.Serial || got.ComputerID != want.ComputerID || !got.IssuedAt.Equal(want.IssuedAt) ||
		!got.NotAfter.Equal(want.NotAfter) || !got.RevokedAt.IsZero() {
		t.Fatalf("certificate = %+v, want %+v", got, want)
	}
	for _, serial := range []string{"0A1B2C", "nope", ""} {
		_, err := db.AgentCertificateBySerial(t.Context(), serial)
		WantCode(t, err, errcode.NotFound)
	}
}

func detectionEvent(id, sig, path string, at time.Time) store.Event {
	return store.Event{ID: id, Type: store.DetectionEventType, OccurredAt: at,
		Data: `{"signature":"` + sig + `","path":"` + path + `","kind":"body","action":"reported","sha256":"abc","engine_version":7}`}
}

func testDetectionsIndexedOnce(t *testing.T, db *store.DB) {
	c := oneComputer(t, db)
	ci := &store.CheckIn{ComputerID: c.ID, Now: T0.Add(time.Minute), Events: []store.Event{
		detectionEvent("d1", "EICAR-Test-File", "/tmp/eicar.com", T0),
		{ID: "d-bad", Type: store.DetectionEventType, OccurredAt: T0, Data: `{"path":"/no/signature"}`},
		ev("other", "agent.started", T0),
	}}
	_, err := db.ApplyCheckIn(t.Context(), ci)
	must(t, err)
	_, err = db.ApplyCheckIn(t.Context(), ci) // a retried check-in
	must(t, err)
	ds, total, err := db.ListDetections(t.Context(), store.DetectionFilter{})
	must(t, err)
	if total != 1 || len(ds) != 1 {
		t.Fatalf("%d detections, want 1 (the one with a signature, once)", total)
	}
	d := ds[0]
	if d.ID != "d1" || d.ComputerID != c.ID || d.Signature != "EICAR-Test-File" || d.Path != "/tmp/eicar.com" || d.Kind != "body" ||
		d.EngineVersion != 7 || d.State != store.DetectionUnresolved || !d.OccurredAt.Equal(T0) {
		t.Fatalf("detection %+v", d)
	}
	if got := computer(t, db, c.ID); got.UnresolvedDetections != 1 {
		t.Fatalf("UnresolvedDetections = %d, want 1", got.UnresolvedDetections)
	}
	if _, n, _ := db.ComputerEvents(t.Context(), c.ID, store.EventFilter{}); n != 3 {
		t.Fatalf("%d events stored, want 3 (the malformed detection stays an event)", n)
	}
}

// The same find (signature, path, content) on the same computer while the
// first is unresolved counts on it, raises no second detection.found
// server event, and leaves the event history whole; a find after the
// resolution, or of another file, is a new detection.
func testDetectionRepeats(t *testing.T, db *store.DB) {
	ctx := t.Context()
	c := oneComputer(t, db)
	checkIn := func(at time.Time, es ...store.Event) {
		t.Helper()
		_, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c.ID, Now: at, Events: es})
		must(t, err)
	}
	foundEvents := func() int {
		evs, err := db.ServerEventsAfter(ctx, 0, []string{"detection.found"}, 1000)
		must(t, err)
		return len(evs)
	}
	checkIn(T0, detectionEvent("day1", "EICAR-Test-File", "/srv/eicar.com", T0))
	checkIn(T0.Add(24*time.Hour), detectionEvent("day2", "EICAR-Test-File", "/srv/eicar.com", T0.Add(24*time.Hour)))
	checkIn(T0.Add(48*time.Hour), detectionEvent("day3", "EICAR-Test-File", "/srv/eicar.com", T0.Add(48*time.Hour)),
		detectionEvent("other", "EICAR-Test-File", "/srv/other.com", T0.Add(48*time.Hour)))
	ds, total, err := db.ListDetections(ctx, store.DetectionFilter{})
	must(t, err)
	byID := map[string]*store.Detection{}
	for _, d := range ds {
		byID[d.ID] = d
	}
	first, other := byID["day1"], byID["other"]
	if total != 2 || first == nil || other == nil || first.Occurrences != 3 || !first.LastSeenAt.Equal(T0.Add(48*time.Hour)) ||
		!first.OccurredAt.Equal(T0) || other.Occurrences != 1 {
		t.Fatalf("detections %d: day1 %+v, other %+v", total, first, other)
	}
	if got := computer(t, db, c.ID); got.UnresolvedDetections != 2 {
		t.Fatalf("UnresolvedDetections = %d, want 2", got.UnresolvedDetections)
	}
	if n := foundEvents(); n != 2 {
		t.Fatalf("%d detection.found server events, want 2 (repeats fire no trigger)", n)
	}
	if _, n, _ := db.ComputerEvents(ctx, c.ID, store.EventFilter{Type: store.DetectionEventType}); n != 4 {
		t.Fatalf("%d detection events in the computer's history, want 4", n)
	}
	// Resolved, then found again: a new detection.
	must(t, db.SetDetectionState(ctx, "day1", store.DetectionResolved, "alice", T0.Add(49*time.Hour)))
	checkIn(T0.Add(72*time.Hour), detectionEvent("day4", "EICAR-Test-File", "/srv/eicar.com", T0.Add(72*time.Hour)))
	d, err := db.DetectionByID(ctx, "day4")
	must(t, err)
	if d.State != store.DetectionUnresolved || d.Occurrences != 1 {
		t.Fatalf("found after the resolution: %+v", d)
	}
	if d, _ := db.DetectionByID(ctx, "day1"); d.Occurrences != 3 || d.State != store.DetectionResolved {
		t.Fatalf("the resolved one changed: %+v", d)
	}
}

// A quarantined file restored or deleted on its computer changes the
// action its detection shows; another computer's detection with the same
// item id is not touched.
func testQuarantineReleased(t *testing.T, db *store.DB) {
	ctx := t.Context()
	tok := NewToken(t, db, store.GroupLostFound, 0)
	a, b := Enroll(t, db, tok, T0, store.Computer{}), Enroll(t, db, tok, T0, store.Computer{})
	quarantined := func(id, path, item string) store.Event {
		return store.Event{ID: id, Type: store.DetectionEventType, OccurredAt: T0,
			Data: `{"signature":"EICAR","path":"` + path + `","action":"quarantined","quarantine_id":"` + item + `","sha256":"` + id + `"}`}
	}
	checkIn := func(c string, es ...store.Event) {
		t.Helper()
		_, err := db.ApplyCheckIn(ctx, &store.CheckIn{ComputerID: c, Now: T0, Events: es})
		must(t, err)
	}
	checkIn(a.ID, quarantined("a1", "/a1", "q1"), quarantined("a2", "/a2", "q2"))
	checkIn(b.ID, quarantined("b1", "/b1", "q1"))
	// An id holding a LIKE wildcard matches nothing but itself.
	checkIn(a.ID, store.Event{ID: "bad", Type: store.EventQuarantineDeleted, OccurredAt: T0, Data: `{"quarantine_id":"%"}`})
	checkIn(a.ID, store.Event{ID: "r1", Type: store.EventQuarantineRestored, OccurredAt: T0, Data: `{"quarantine_id":"q1","restored_to":"/a1"}`},
		store.Event{ID: "d2", Type: store.EventQuarantineDeleted, OccurredAt: T0, Data: `{"quarantine_id":"q2"}`})
	for id, want := range map[string]string{"a1": "restored", "a2": "deleted", "b1": "quarantined"} {
		d, err := db.DetectionByID(ctx, id)
		must(t, err)
		if d.Action != want {
			t.Errorf("detection %s: action %q, want %q", id, d.Action, want)
		}
	}
}

func testDetectionsFiltersAndStates(t *testing.T, db *store.DB) {
	g, err := db.CreateGroup(t.Context(), store.GroupAll, "Servers")
	must(t, err)
	a := Enroll(t, db, NewToken(t, db, g.ID, 0), T0, store.Computer{Name: "a"})
	b := oneComputer(t, db)
	for i, c := range []*store.Computer{a, b} {
		_, err := db.ApplyCheckIn(t.Context(), &store.CheckIn{ComputerID: c.ID, Now: T0, Events: []store.Event{
			detectionEvent(c.ID+"-1", "Win.Trojan.Agent", "/x", T0.Add(time.Duration(i)*time.Hour)),
			detectionEvent(c.ID+"-2", "EICAR-Test-File", "/y", T0.Add(time.Duration(i)*time.Hour+time.Minute)),
		}})
		must(t, err)
	}
	count := func(f store.DetectionFilter) int {
		t.Helper()
		_, n, err := db.ListDetections(t.Context(), f)
		must(t, err)
		return n
	}
	cases := map[string]struct {
		f    store.DetectionFilter
		want int
	}{
		"all":            {store.DetectionFilter{}, 4},
		"computer":       {store.DetectionFilter{ComputerID: a.ID}, 2},
		"group":          {store.DetectionFilter{GroupIDs: []string{g.ID}}, 2},
		"empty groups":   {store.DetectionFilter{GroupIDs: []string{}}, 0},
		"name substring": {store.DetectionFilter{Signature: "trojan"}, 2},
		"since":          {store.DetectionFilter{Since: T0.Add(30 * time.Minute)}, 2},
		"until":          {store.DetectionFilter{Until: T0.Add(30 * time.Minute)}, 2},
		"unresolved":     {store.DetectionFilter{State: store.DetectionUnresolved}, 4},
	}
	for name, tc := range cases {
		if got := count(tc.f); got != tc.want {
			t.Errorf("%s: %d, want %d", name, got, tc.want)
		}
	}
	_, _, err = db.ListDetections(t.Context(), store.DetectionFilter{State: "gone"})
	WantCode(t, err, errcode.Invalid)

	must(t, db.SetDetectionState(t.Context(), a.ID+"-1", store.DetectionResolved, "alice", T0.Add(time.Hour)))
	d, err := db.DetectionByID(t.Context(), a.ID+"-1")
	must(t, err)
	if d.State != store.DetectionResolved || d.ResolvedBy != "alice" || !d.ResolvedAt.Equal(T0.Add(time.Hour)) {
		t.Fatalf("resolved detection %+v", d)
	}
	if count(store.DetectionFilter{State: store.DetectionResolved}) != 1 || computer(t, db, a.ID).UnresolvedDetections != 1 {
		t.Fatal("resolving did not move the counts")
	}
	must(t, db.SetDetectionState(t.Context(), a.ID+"-1", store.DetectionUnresolved, "bob", T0))
	if d, _ := db.DetectionByID(t.Context(), a.ID+"-1"); d.State != store.DetectionUnresolved || d.ResolvedBy != "" || !d.ResolvedAt.IsZero() {
		t.Fatalf("unresolved again: %+v", d)
	}
	WantCode(t, db.SetDetectionState(t.Context(), "nope", store.DetectionResolved, "x", T0), errcode.NotFound)
	WantCode(t, db.SetDetectionState(t.Context(), a.ID+"-1", "maybe", "x", T0), errcode.Invalid)
	_, err = db.DetectionByID(t.Context(), "nope")
	WantCode(t, err, errcode.NotFound)
}

func testApplyCheckInsBatch(t *testing.T, db *store.DB) {
	a, b := oneComputer(t, db), oneComputer(t, db)
	n, err := db.ApplyCheckIns(t.Context(), []*store.CheckIn{
		{ComputerID: a.ID, Now: T0, Events: []store.Event{ev("e1", "x.y", T0), ev("e2", "x.y", T0)}},
		{ComputerID: b.ID, Now: T0, Events: []store.Event{ev("e1", "x.y", T0)}},
	})
	must(t, err)
	if len(n) != 2 || n[0] != 2 || n[1] != 1 {
		t.Fatalf("inserted %v, want [2 1]", n)
	}
	// A batch with one bad write (unknown computer) writes nothing.
	_, err = db.ApplyCheckIns(t.Context(), []*store.CheckIn{
		{ComputerID: a.ID, Now: T0, Events: []store.Event{ev("e3", "x.y", T0)}},
		{ComputerID: "no-such-computer", Now: T0, Events: []store.Event{ev("e4", "x.y", T0)}},
	})
	if err == nil {
		t.Fatal("a batch writing events for an unknown computer succeeded")
	}
	if _, total, _ := db.ComputerEvents(t.Context(), a.ID, store.EventFilter{}); total != 2 {
		t.Fatalf("computer a has %d events after the failed batch, want 2", total)
	}
}
