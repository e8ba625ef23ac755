// A deliberately expensive --validate module for the bench: spends 100 us of CPU per request, then accepts it.
// Stands in for real heavy checks (schema validation, signature checks) whose cost dominates the broker's own.
export default function burn() {
  const end = performance.now() + 0.1;
  while (performance.now() < end);
  return null;
}
