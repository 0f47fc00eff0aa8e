-- Argo CD health of a runstate Runbook (resource.customizations.health.runstate.dev_Runbook).
-- Follows the Runbook's kstatus conditions: Degraded when Stalled (an invalid spec, or the
-- Run its onChange trigger started for the current generation did not complete);
-- Progressing while Reconciling (runs active, or the current generation's Run not yet
-- seen or not yet ended) and until the operator has seen the current generation;
-- Healthy otherwise.
local hs = {status = "Progressing", message = "Waiting for the runstate operator"}
local meta = obj.metadata or {}
local st = obj.status
if st == nil or st.conditions == nil then
  return hs
end
if st.observedGeneration == nil or (meta.generation ~= nil
    and st.observedGeneration < meta.generation) then
  hs.message = "Waiting for the operator to observe generation " .. (meta.generation or "?")
  return hs
end
local byType = {}
for _, c in ipairs(st.conditions) do
  byType[c.type] = c
end
local function truth(name)
  local c = byType[name]
  return c ~= nil and c.status == "True"
end
local function says(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason or fallback
end
if truth("Stalled") then
  hs.status = "Degraded"
  hs.message = says(byType["Stalled"], "Stalled")
elseif truth("Reconciling") then
  hs.message = says(byType["Reconciling"], "Reconciling")
elseif truth("Ready") then
  hs.status = "Healthy"
  local last = st.lastRun
  if last ~= nil and last.name ~= nil then
    hs.message = "Last run " .. last.name .. ": " .. (last.state or last.type or "new")
  else
    hs.message = "No runs yet"
  end
else
  hs.message = says(byType["Ready"] or {}, "Not ready")
end
return hs
