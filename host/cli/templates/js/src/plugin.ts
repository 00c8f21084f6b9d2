// An edgerec plugin in TypeScript: one stage of a merchant's recommendation pipeline.
//
// The example rule drops items under a price floor (or without a price) and
// multiplies the score of items on sale, leaving a reason code. The helpers
// (`./edgerec`) are documented in that file; the types of the contract are in
// `types/` (made from `wit/plugin.wit` by `jco guest-types`).

import { definePlugin, info, Ranking } from "./edgerec";

export const stage = definePlugin({
  // The stage config: the JSON an operator attaches (`config.json`). Missing
  // keys take these values; an unknown key is an error.
  defaults: { minPrice: 0, saleBoost: 1 },

  // Called once when an operator sets the stage up: validate the config here.
  columns(config) {
    if (!Number.isFinite(config.saleBoost) || config.saleBoost < 0) {
      throw new Error("`saleBoost` must be a finite number ≥ 0");
    }
    return ["price", "on_sale"];
  },

  run(_ctx, config, cands) {
    const price = cands.f64("price");
    if (!price) throw new Error("the catalog has no f64 `price` column");
    const onSale = cands.bool("on_sale");
    const ranking = new Ranking(cands);
    ranking.retain((e) => (price.get(e.index) ?? -Infinity) >= config.minPrice);
    ranking.rescore((e) => {
      if (onSale?.get(e.index) === true) {
        e.score = Math.fround(e.score * config.saleBoost);
        e.reason = "on-sale";
      }
    });
    ranking.sortByScore();
    info(`kept ${ranking.length} of ${cands.length} candidates`);
    return ranking.intoOutput();
  },
});
